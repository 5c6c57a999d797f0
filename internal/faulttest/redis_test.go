package faulttest

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/workerproc"
)

// TestRedisRestart kills a private redis-server (AOF, appendfsync
// everysec) with SIGKILL mid-workload and restarts it. Workers must
// reconnect on their own, no task acknowledged more than a second before
// the crash may be lost, and checkpoints that existed a second before the
// crash must survive it (or belong to a task that completed).
func TestRedisRestart(t *testing.T) {
	requireFaults(t)
	t.Parallel()
	s := newSuite(t, "--appendonly", "yes", "--appendfsync", "everysec")
	s.proxy(Faults{Latency: 250 * time.Millisecond})
	workers := []*workerproc.Child{s.child(slowChild), s.child(slowChild)}
	ctx := context.Background()
	var l ledger
	produce := func(d time.Duration) {
		end := time.Now().Add(d)
		kinds := []string{"upload", "upload", "copy", "move"}
		for i := 0; time.Now().Before(end); i++ {
			s.enqueueOp(&l, kinds[i%len(kinds)], 10*mib, 40*mib)
			time.Sleep(250 * time.Millisecond)
		}
	}
	start := time.Now()
	produce(6 * time.Second)
	// A backlog of big uploads, so checkpoints are live when Redis dies.
	for range 8 {
		s.enqueueOp(&l, "upload", 40*mib, 64*mib)
	}
	time.Sleep(time.Second)
	before := map[string]bool{}
	for _, k := range s.rdb.Keys(ctx, "ferry:ckpt:{*").Val() {
		before[k] = true
	}
	produce(1500 * time.Millisecond) // still enqueueing during the last 1.5 s
	killedAt := time.Now()
	s.redis.Kill()
	// Producers keep trying while Redis is down: those enqueues fail and
	// are not acknowledged.
	produce(2 * time.Second)
	if err := s.redis.Start(); err != nil {
		t.Fatal(err)
	}
	restartedAt := time.Now()
	after := map[string]bool{}
	for _, k := range s.rdb.Keys(ctx, "ferry:ckpt:{*").Val() {
		after[k] = true
	}
	produce(5 * time.Second)
	ops := l.all()
	var must, window, failed []*op
	for _, o := range ops {
		switch {
		case o.ackedAt.IsZero():
			failed = append(failed, o)
		case o.ackedAt.Before(killedAt.Add(-time.Second)) || o.ackedAt.After(restartedAt):
			must = append(must, o)
		default:
			window = append(window, o) // acknowledged within 1 s of the crash: AOF everysec may lose it
		}
	}
	left := s.waitAll(must, 6*time.Minute)
	for o, st := range left {
		t.Errorf("LOST: %s %s acknowledged at %s (crash at %s) did not complete: %s", o.kind, o.id,
			o.ackedAt.Format("15:04:05.000"), killedAt.Format("15:04:05.000"), st)
	}
	windowLost := 0
	for o := range s.waitAll(window, time.Minute) {
		windowLost++
		t.Logf("acknowledged %s before the crash, within the fsync window: %s did not survive", o.ackedAt.Sub(killedAt), o.id)
	}
	var completed []*op
	for _, o := range append(must, window...) {
		if ti, err := s.client.Inspector().GetTaskInfo(s.queue, o.id); err == nil && ti.State == asynq.TaskStateCompleted {
			completed = append(completed, o)
		}
	}
	// Checkpoints: every one present 1.5 s before the crash is present
	// after it, unless its task completed in between (and deleted it).
	ckLost := 0
	for k := range before {
		if after[k] {
			continue
		}
		id := k[len("ferry:ckpt:{") : len(k)-1]
		if ti, err := s.client.Inspector().GetTaskInfo(s.queue, id); err != nil || ti.State != asynq.TaskStateCompleted {
			ckLost++
			t.Errorf("checkpoint %s existed 1.5 s before the Redis crash and is gone after it (task state %v, %v)", k, taskState(ti), err)
		}
	}
	verified := s.verify(completed)
	for _, w := range workers {
		if w.Exited() {
			t.Errorf("worker %s exited when Redis went away; it must reconnect on its own (log %s)", w.Name, w.Log)
		}
	}
	orphans := s.janitorAndCheckUploads()
	s.checkNoSecret()
	t.Logf("FIGURES redis-restart: redis_kills=1 downtime=%s tasks_acked=%d must_complete=%d lost=%d in_fsync_window=%d window_lost=%d enqueues_refused_while_down=%d checkpoints_before=%d checkpoints_after=%d checkpoints_lost=%d bytes_verified=%d orphan_uploads_aborted_by_janitor=%d duration=%s",
		restartedAt.Sub(killedAt).Round(time.Millisecond), len(must)+len(window), len(must), len(left), len(window), windowLost, len(failed),
		len(before), len(after), ckLost, verified, orphans, time.Since(start).Round(time.Second))
}

func taskState(ti *asynq.TaskInfo) string {
	if ti == nil {
		return "unknown"
	}
	return ti.State.String() + " " + ti.LastErr
}
