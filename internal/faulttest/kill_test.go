package faulttest

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/workerproc"
)

// TestKillLoop SIGKILLs worker processes at random points, at least 20
// times, while a mixed workload of uploads, copies and moves runs on a
// steady pool of workers (each kill is replaced at once: asynq recovers a
// dead worker's tasks only after 60–120 s, so kills overlap). A checker
// then verifies every acknowledged enqueue completed, every destination's
// SHA-256 equals its source's, no move deleted its source before its copy
// was complete (checked live), and no multipart upload is left.
func TestKillLoop(t *testing.T) {
	requireFaults(t)
	t.Parallel()
	s := newSuite(t)
	// Latency on every request stretches transfers over seconds, so kills
	// land mid-part, mid-Complete, between copy and delete.
	px := s.proxy(Faults{Latency: 150 * time.Millisecond})
	const pool, kills = 3, 22
	var mu sync.Mutex
	workers := make([]*workerproc.Child, 0, pool)
	for range pool {
		workers = append(workers, s.child(slowChild))
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	mon := s.monitorMoves(ctx)
	var l ledger
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		kinds := []string{"upload", "upload", "copy", "move", "move"}
		for ctx.Err() == nil {
			for range 3 {
				mon.watch(s.enqueueOp(&l, kinds[rand.IntN(len(kinds))], 2*mib, 24*mib))
			}
			select {
			case <-ctx.Done():
			case <-time.After(1200 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	for k := range kills {
		time.Sleep(time.Duration(1500+rand.IntN(3000)) * time.Millisecond)
		mu.Lock()
		i := rand.IntN(len(workers))
		victim := workers[i]
		victim.Kill()
		workers[i] = s.child(slowChild)
		mu.Unlock()
		t.Logf("kill %d/%d: SIGKILL %s (pid %d) at %s; replaced by a new worker", k+1, kills, victim.Name, victim.Pid(), time.Since(start).Round(time.Millisecond))
	}
	stop()
	<-produced
	ops := l.all()
	var acked []*op
	for _, o := range ops {
		if !o.ackedAt.IsZero() {
			acked = append(acked, o)
		}
	}
	t.Logf("kill phase over after %s: %d enqueues acknowledged of %d; waiting for recovery", time.Since(start).Round(time.Second), len(acked), len(ops))
	// Moves finishing now are still checked by the monitor.
	mctx, mstop := context.WithCancel(context.Background())
	mon2 := s.monitorMoves(mctx)
	for _, o := range acked {
		mon2.watch(o)
	}
	left := s.waitAll(acked, 5*time.Minute)
	mstop()
	for o, st := range left {
		t.Errorf("LOST: acknowledged %s %s (%s → %s) did not complete: %s", o.kind, o.id, o.src, o.dst, st)
	}
	var completed []*op
	for _, o := range acked {
		if _, bad := left[o]; !bad {
			completed = append(completed, o)
		}
	}
	retries, crashed := s.taskStats(acked)
	verified := s.verify(completed)
	checks1, v1 := mon.result()
	checks2, v2 := mon2.result()
	for _, v := range append(v1, v2...) {
		t.Error(v)
	}
	orphans := s.janitorAndCheckUploads()
	for _, w := range workers {
		if w.Exited() {
			t.Errorf("worker %s exited on its own (log %s)", w.Name, w.Log)
		}
	}
	s.checkNoSecret()
	t.Logf("FIGURES kill-loop: crashes=%d tasks_acked=%d tasks_completed=%d lost=%d tasks_hit_by_a_crash=%d task_retries=%d bytes_verified=%d move_invariant_checks=%d orphan_uploads_aborted_by_janitor=%d s3_requests=%d duration=%s",
		kills, len(acked), len(completed), len(left), crashed, retries, verified, checks1+checks2, orphans, px.Counts()[KindRequests], time.Since(start).Round(time.Second))
}

// slowChild runs one part at a time, so uploads last long enough to be
// killed in the middle.
func slowChild(c *workerproc.ChildConfig) { c.PartConcurrency = 1 }
