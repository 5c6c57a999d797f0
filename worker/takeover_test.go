package worker_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/internal/workerproc"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// TestMigrationCrashIsTakenOver kills a worker process (SIGKILL) in the
// middle of a migration while a second worker runs: the second takes the
// migration over from its cursor within seconds (its ownership expired, see
// takeover.go), under the same task id, with the batches and copies the
// dead worker was running; asynq's own run of the task, after its lease
// recovery, ends from the takeover's done mark with the same report. The
// report's counts are exact (every object listed and copied once), every
// object arrives with its bytes, and an object the destination held at the
// kill is written again only if it was in flight then (at most the dead
// worker's slots times a batch's concurrency) or the dead worker had logged
// it done after its last write of its batch's record (which is written in
// groups, worker/batch.go).
func TestMigrationCrashIsTakenOver(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("the crash test waits for asynq's lease recovery (~1-2 min)")
	}
	// Two pages of the listing, more batches than the window holds.
	const n, window, inFlight = 1200, 8, 2 * 16
	b := setup(t, nil)
	ctx := context.Background()
	s := b.storage(t)
	sums := fillSource(t, s, "mtk/src/", n, 0)
	id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: s3loc("", b.bucket, "mtk/src/"),
		Dest: s3loc("", b.bucket, "mtk/dst/"), Window: window}))
	first := b.startChild(t, "first", 2)
	counter := func(f string) int64 {
		v, _ := b.rdb.HGet(ctx, "ferry:migrate:{"+id+"}", f).Int64()
		return v
	}
	for deadline := time.Now().Add(2 * time.Minute); counter("copied") < 50; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first worker did not get going")
		}
	}
	second := b.startChild(t, "second", 2)
	first.kill(t)
	killed := time.Now()
	listed, copied := counter("listed"), counter("copied")
	if copied >= n {
		t.Fatal("the migration copied everything before the kill; nothing to take over")
	}
	atKill := map[string]time.Time{}
	for f, err := range s.List(ctx, "mtk/dst/", 1000) {
		if err != nil {
			t.Fatal(err)
		}
		atKill[f.Key] = f.LastModified
	}

	// Seconds from the kill until another worker moved the migration on:
	// its cursor, or its count of copies (counted by its own run only).
	var resumeAfter time.Duration
	for deadline := time.Now().Add(4 * time.Minute); resumeAfter == 0; time.Sleep(100 * time.Millisecond) {
		if counter("listed") > listed || counter("copied") > copied {
			resumeAfter = time.Since(killed)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the migration never resumed (second worker log: %s)", second.Log)
		}
	}
	if p := b.wait(t, id, 5*time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("after the crash the migration ended %+v", p)
	}
	if resumeAfter > 15*time.Second {
		t.Errorf("the migration resumed %.1fs after the kill; the takeover must continue it within 15s", resumeAfter.Seconds())
	}
	type line struct {
		TaskID string `json:"task_id"`
	}
	count := func(c *child, msg string) int {
		k := 0
		for _, l := range logged[line](t, c, msg) {
			if l.TaskID == id {
				k++
			}
		}
		return k
	}
	if k := count(second, "taking over a task whose worker stopped renewing its ownership"); k != 1 {
		t.Errorf("the second worker took the migration over %d times; want 1 (log %s)", k, second.Log)
	}
	ti := b.waitTaskState(t, id, asynq.TaskStateCompleted, 4*time.Minute)
	if k := count(second, "a takeover finished this task"); k != 1 {
		t.Errorf("asynq's recovery run did not end from the takeover's done mark (logged %d times; log %s)", k, second.Log)
	}
	var rep worker.MigrateReport
	if err := json.Unmarshal(ti.Result, &rep); err != nil {
		t.Fatalf("report %q: %v", ti.Result, err)
	}
	if rep.Listed != n || rep.Copied != n || rep.Skipped != 0 || rep.Failed != 0 {
		t.Errorf("report %+v; want %d listed and copied, none skipped or failed", rep, n)
	}
	if p, _ := b.client.Progress(ctx, id); p.Counters["copied"] != n || p.Counters["listed"] != n {
		t.Errorf("final progress counters %v; want %d listed and copied", p.Counters, n)
	}
	checkMigrated(t, s, s, "mtk/src/", "mtk/dst/", sums)
	// The destinations the first worker logged done and left out of the
	// record.
	rec, unrec := recordedBy(t, first), map[string]bool{}
	for _, l := range logged[struct {
		TaskID string `json:"task_id"`
		Item   int    `json:"item"`
		Dest   string `json:"dest"`
	}](t, first, "batch item done") {
		if !rec[l.TaskID][l.Item] {
			unrec[l.Dest] = true
		}
	}
	again, againUnrec := 0, 0
	for f, err := range s.List(ctx, "mtk/dst/", 1000) {
		if err != nil {
			t.Fatal(err)
		}
		if at, ok := atKill[f.Key]; ok && !at.Equal(f.LastModified) {
			again++
			if unrec["s3://"+b.bucket+"/"+f.Key] {
				againUnrec++
			}
		}
	}
	if again-againUnrec > inFlight {
		t.Errorf("%d objects the destination held at the kill were written again, %d of them logged done and not yet recorded by the first worker; at most the %d in flight may be others",
			again, againUnrec, inFlight)
	}
	if x, _ := b.rdb.Exists(ctx, "ferry:own:{"+id+"}", "ferry:own:{"+id+"}:done").Result(); x != 0 {
		t.Errorf("%d ownership keys outlived the migration", x)
	}
	t.Logf("migration crash: killed at %d listed, %d copied of %d (%d at the destination); resumed %.1fs after the kill; %d written again (%d of them logged done after the last write of their record); report %s",
		listed, copied, n, len(atKill), resumeAfter.Seconds(), again, againUnrec, strconv.Quote(string(ti.Result)))
}

// TestTakeoverSparesARunAboutToClaim: a run indexes its task for the
// takeover loop just before it claims it, so for a moment the task is
// indexed, active in asynq and owned by nobody while its worker is alive.
// Another worker's takeover scan in that moment must leave it alone: here
// the moment is stretched to 3 s (a pause between index and claim) while a
// second worker scans every 100 ms. The task runs once, on its own worker,
// and nobody takes it over.
func TestTakeoverSparesARunAboutToClaim(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	path, _ := testenv.RandomFile(t, b.dir, "slow-claim", storage.MinPartSize+1)

	paused := make(chan string, 1)
	first, err := worker.New(b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	worker.BeforeClaim(first, func(id string) {
		select {
		case paused <- id:
			time.Sleep(3 * time.Second)
		default: // paused once already
		}
	})
	workerproc.Run(t, first)

	id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "slow-claim")}))
	select {
	case got := <-paused:
		if got != id {
			t.Fatalf("paused before claiming %s; want %s", got, id)
		}
	case <-time.After(time.Minute):
		t.Fatal("the first worker did not start the upload")
	}
	core, logs := observer.New(zap.InfoLevel)
	second := b.cfg
	second.TakeoverInterval, second.Logger = 100*time.Millisecond, zap.New(core)
	workerproc.Start(t, second)

	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("upload ended %+v", p)
	}
	if n := logs.FilterMessage("taking over a task whose worker stopped renewing its ownership").Len(); n != 0 {
		t.Errorf("the second worker took over a live run %d times while it was between index and claim", n)
	}
}
