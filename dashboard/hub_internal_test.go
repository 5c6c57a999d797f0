package dashboard

import (
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// TestReconcileKeepsWhatArrivedDuringTheScan replays, step by step, the race
// that made TestTransfersAPI lose an active transfer under load: a worker
// stamps UpdatedAt, is descheduled (or its clock is behind), and its HSET and
// PUBLISH land after a scan started and after SCAN passed the key. The
// message is indexed, then the scan's result, which lacks the key, must not
// delete it: the hash exists, and UpdatedAt (the writer's clock) says nothing
// about when the hub learnt of it.
func TestReconcileKeepsWhatArrivedDuringTheScan(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb := testenv.RedisClient(t)
	h := newHub(rdb, zaptest.NewLogger(t), time.Minute, 1000, newServerMetrics())

	stamped := time.Now()
	start := stamped.Add(time.Millisecond) // the scan starts after the stamp
	found, err := h.scan(ctx)              // and passes the key before it exists
	if err != nil {
		t.Fatal(err)
	}
	p := tasks.Progress{TaskID: testenv.UniqueName("late"), State: tasks.StateActive, UpdatedAt: stamped}
	if _, ok := found[p.TaskID]; ok {
		t.Fatal("the scan found a hash not written yet")
	}
	if err := tasks.PublishProgress(ctx, rdb, p, time.Minute); err != nil {
		t.Fatal(err)
	}
	h.apply(p) // its message, received while the scan runs
	h.reconcile(found, start)

	listed := false
	for _, q := range h.list(0) {
		listed = listed || q.TaskID == p.TaskID
	}
	if !listed {
		t.Errorf("%s was dropped from the index by a scan that started before its hash was written", p.TaskID)
	}
}
