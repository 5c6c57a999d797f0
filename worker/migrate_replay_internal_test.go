package worker

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// TestTakeoverReplaysAFinishedRun: a migration run killed after it
// recorded its report with the finished mark, but before the task ended,
// is taken over; the takeover ends the task with that run's report and
// error. It does not start afresh as a run again does (which would find
// every object identical and report none copied: the kill loop's
// "counts_wrong"), and it lists nothing (the migration here has no source
// or destination to list). A run of asynq over the same state is a run
// again, and is not replayed.
func TestTakeoverReplaysAFinishedRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	w := &Worker{log: log, rdb: testenv.RedisClient(t), cfg: Config{ProgressTTL: time.Hour}}
	id := testenv.UniqueName("mig")
	want := &MigrateReport{Source: "s3://a/x/", Dest: "s3://b/x/", Listed: 7, Copied: 6, Failed: 1, Bytes: 600,
		Failures: map[string]string{"x/bad": "why it failed"}}
	const reason = "migration finished with 1 objects failed"
	rec, err := json.Marshal(finishedRun{Report: want, Error: reason})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.rdb.HSet(ctx, migrateKey(id), stateFinished, "1", stateReport, rec, "listed", 7, "copied", 6, "failed", 1).Err(); err != nil {
		t.Fatal(err)
	}
	prog := w.newProgress(ctx, id, tasks.TypeMigrate, want.Source, want.Dest)
	t.Cleanup(prog.close)
	m := &migration{w: w, id: id, prog: prog, log: log}

	if _, ok, err := m.replayFinished(ctx); ok || err != nil {
		t.Errorf("a run of asynq over a finished state: replayed (%v, %v); want a run again, not a replay", ok, err)
	}
	got, err := m.run(withClaim(ctx, &claim{id: id, takeover: true}))
	if err == nil || !errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), reason) {
		t.Errorf("takeover ended with %v; want the finished run's error, final", err)
	}
	if got == nil || got.Listed != want.Listed || got.Copied != want.Copied || got.Failed != want.Failed ||
		got.Bytes != want.Bytes || !maps.Equal(got.Failures, want.Failures) {
		t.Errorf("takeover's report %+v; want the finished run's %+v", got, want)
	}
	if run, _ := w.rdb.HGet(ctx, migrateKey(id), stateRun).Result(); run != "" {
		t.Errorf("the takeover counted a run again (%s = %q)", stateRun, run)
	}
	p, err := tasks.NewClient(w.rdb).Progress(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if p.Counters["copied"] != 6 || p.Counters["failed"] != 1 || p.Counters["listed"] != 7 {
		t.Errorf("published counters %v; want the finished run's", p.Counters)
	}
}
