package worker

import (
	"context"
	"maps"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ferryhq/ferry/tasks"
)

// progressInterval throttles progress to about four updates a second per
// task; every finished part is published as well.
const progressInterval = 250 * time.Millisecond

// progress writes one task's progress hash and publishes each change.
type progress struct {
	w  *Worker
	mu sync.Mutex
	p  tasks.Progress
	// runStart and runBytes measure this run's rate (resumed bytes excluded).
	runStart time.Time
	runBase  int64
	lastPub  time.Time
	// moved is the bytes transferred since the last publish, added to the
	// aggregate throughput with it (tasks.Throughput); countMoved is false
	// for tasks that move no object bytes (webhook deliveries).
	moved      int64
	countMoved bool
	// active are the parts being sent (PartsActive).
	active map[int]bool
	// countersSet and bytesSet: the first counters and setBytes of a run
	// set its starting point (ResumedCounters, runBase).
	countersSet, bytesSet bool
	// first publishes "active" if the task runs longer than progressInterval.
	first *time.Timer
	// pubMu orders publishes: each snapshots and writes under it, so a
	// later state never lands before an earlier one. After close, only
	// the final state may still be published.
	pubMu  sync.Mutex
	closed bool
}

// newProgress starts a task's progress. The "active" state is published
// after progressInterval, or with the first finished part, whichever comes
// first: a task done sooner (most small objects) publishes only its final
// state, which halves its progress traffic to Redis.
func (w *Worker) newProgress(ctx context.Context, id, typ, src, dst string) *progress {
	now := time.Now()
	pr := &progress{w: w, runStart: now, lastPub: now, countMoved: typ != tasks.TypeNotify,
		p: tasks.Progress{TaskID: id, Type: typ, State: tasks.StateActive, StartedAt: now, Source: src, Dest: dst}}
	pr.first = time.AfterFunc(progressInterval, func() { pr.publish(ctx) })
	return pr
}

// quiet holds back the delayed "active" publish while the run waits for
// the task's ownership: another worker's run (a takeover) publishes the
// task's progress meanwhile, and an empty "active" state must not
// overwrite it. owning starts the delay again once the run owns the task.
func (pr *progress) quiet() { pr.first.Stop() }

func (pr *progress) owning() {
	pr.pubMu.Lock()
	defer pr.pubMu.Unlock()
	if !pr.closed {
		pr.first.Reset(progressInterval)
	}
}

// adopt takes over the task's published progress (a takeover's, which
// ended the task): totals, what was done and the counters, so the state
// this run publishes last keeps them.
func (pr *progress) adopt(ctx context.Context) {
	h, err := pr.w.rdb.HGetAll(ctx, tasks.ProgressKey(pr.p.TaskID)).Result()
	if err != nil || len(h) == 0 {
		return
	}
	p, err := tasks.ParseProgress(pr.p.TaskID, h)
	if err != nil {
		return
	}
	pr.mu.Lock()
	pr.p.BytesTotal, pr.p.BytesDone, pr.p.PartsTotal, pr.p.PartsDone = p.BytesTotal, p.BytesDone, p.PartsTotal, p.PartsDone
	pr.p.ResumedFrom, pr.p.Counters = p.ResumedFrom, p.Counters
	pr.runBase = p.BytesDone // this run moved nothing
	pr.mu.Unlock()
}

// setTotal sets the totals once they are known.
func (pr *progress) setTotal(bytes int64, parts int) {
	pr.mu.Lock()
	pr.p.BytesTotal, pr.p.PartsTotal = bytes, parts
	pr.mu.Unlock()
}

// resumed reports the bytes a checkpoint already holds, at once, so a
// resumed upload never starts from zero, and which parts (nil when the
// task has no parts: a batch).
func (pr *progress) resumed(ctx context.Context, bytes int64, parts []int) {
	pr.mu.Lock()
	pr.p.BytesDone, pr.p.PartsDone, pr.p.ResumedFrom = bytes, len(parts), bytes
	pr.p.PartsResumed = tasks.FormatParts(parts)
	pr.runBase = bytes
	pr.mu.Unlock()
	pr.publish(ctx)
}

// add counts finished bytes (and parts); a finished part always publishes.
func (pr *progress) add(ctx context.Context, bytes int64, parts int) {
	pr.mu.Lock()
	pr.p.BytesDone += bytes
	pr.p.PartsDone += parts
	pr.moved += bytes
	due := parts > 0 || time.Since(pr.lastPub) >= progressInterval
	pr.mu.Unlock()
	if due {
		pr.publish(ctx)
	}
}

// partStarted records part n in flight; published with the next update.
func (pr *progress) partStarted(n int) {
	pr.mu.Lock()
	if pr.active == nil {
		pr.active = map[int]bool{}
	}
	pr.active[n] = true
	pr.p.PartsActive = formatActive(pr.active)
	pr.mu.Unlock()
}

// partDone counts part n of size bytes finished, and publishes.
func (pr *progress) partDone(ctx context.Context, n int, size int64) {
	pr.mu.Lock()
	delete(pr.active, n)
	pr.p.PartsActive = formatActive(pr.active)
	pr.mu.Unlock()
	pr.add(ctx, size, 1)
}

func formatActive(active map[int]bool) string {
	ns := make([]int, 0, len(active))
	for n := range active {
		ns = append(ns, n)
	}
	return tasks.FormatParts(ns)
}

// setDone sets the bytes done (for callers that count totals) and
// publishes as for a finished part.
func (pr *progress) setDone(ctx context.Context, done int64) {
	pr.mu.Lock()
	pr.moved += max(done-pr.p.BytesDone, 0)
	pr.p.BytesDone = done
	pr.p.PartsDone++
	pr.mu.Unlock()
	pr.publish(ctx)
}

// setBytes sets the bytes done without publishing (a migration's total
// bytes copied, published with its counters).
func (pr *progress) setBytes(done int64) {
	pr.mu.Lock()
	if !pr.bytesSet {
		// What earlier runs copied: this run's rate excludes it.
		pr.bytesSet, pr.runBase = true, done
		pr.p.ResumedFrom = done
	}
	pr.p.BytesDone = done
	pr.mu.Unlock()
}

// counters sets aggregate counters (deletes, migrations) and publishes when due.
func (pr *progress) counters(ctx context.Context, c map[string]int64, force bool) {
	pr.mu.Lock()
	if !pr.countersSet {
		pr.countersSet = true
		for k, v := range c {
			if v != 0 && k != "pending" {
				pr.p.ResumedCounters = maps.Clone(c)
				break
			}
		}
	}
	pr.p.Counters = c
	due := force || time.Since(pr.lastPub) >= progressInterval
	pr.mu.Unlock()
	if due {
		pr.publish(ctx)
	}
}

// finish publishes the completed state and returns it.
func (pr *progress) finish(ctx context.Context) tasks.Progress {
	pr.mu.Lock()
	pr.p.State = tasks.StateCompleted
	pr.p.PartsActive, pr.active = "", nil
	if pr.p.BytesTotal > 0 {
		pr.p.BytesDone = pr.p.BytesTotal
	}
	pr.mu.Unlock()
	return pr.emit(ctx, true)
}

// fail publishes the state a failed run leaves (retrying, failed or
// cancelled) with its error, and returns it. The worker knows its last
// progress: nothing is read back from Redis.
func (pr *progress) fail(ctx context.Context, state tasks.State, err error) tasks.Progress {
	pr.mu.Lock()
	pr.p.State, pr.p.Error = state, err.Error()
	pr.p.PartsActive, pr.active = "", nil
	pr.mu.Unlock()
	return pr.emit(ctx, true)
}

// close stops publishing: once the handler returned, only its final state
// (finish, fail) is published, and nothing may overwrite it. Bytes moved
// since the last publish (a run stopped by a shutdown publishes no final
// state) still count in the aggregate throughput.
func (pr *progress) close() {
	pr.first.Stop()
	pr.pubMu.Lock()
	defer pr.pubMu.Unlock()
	pr.closed = true
	pr.mu.Lock()
	moved := pr.takeMoved()
	pr.mu.Unlock()
	if moved > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tasks.RecordThroughput(ctx, pr.w.rdb, moved, time.Now()); err != nil {
			pr.w.log.Warn("could not record throughput", zap.String("task_id", pr.p.TaskID), zap.Error(err))
		}
	}
}

// takeMoved returns the bytes moved since the last publish, for the
// aggregate throughput, and starts counting again. Called with mu held.
func (pr *progress) takeMoved() int64 {
	m := pr.moved
	pr.moved = 0
	if !pr.countMoved {
		return 0
	}
	return m
}

func (pr *progress) publish(ctx context.Context) { pr.emit(ctx, false) }

// emit publishes the current value and returns it (zero when closed).
func (pr *progress) emit(ctx context.Context, final bool) tasks.Progress {
	pr.pubMu.Lock()
	defer pr.pubMu.Unlock()
	if pr.closed {
		return tasks.Progress{}
	}
	if final {
		pr.closed = true
		pr.first.Stop()
	}
	pr.mu.Lock()
	now := time.Now()
	if el := now.Sub(pr.runStart).Seconds(); pr.p.Error != "" {
		pr.p.Rate = 0 // a failed run moves nothing
	} else if el > 0 {
		pr.p.Rate = float64(pr.p.BytesDone-pr.runBase) / el
	}
	pr.p.UpdatedAt = now
	pr.lastPub = now
	moved := pr.takeMoved()
	p := pr.p
	p.Counters = maps.Clone(p.Counters)
	pr.mu.Unlock()
	var ttl time.Duration
	if p.State.Terminal() {
		ttl = pr.w.cfg.ProgressTTL
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := tasks.PublishProgressMoved(pctx, pr.w.rdb, p, ttl, moved); err != nil {
		pr.w.log.Warn("could not publish progress", zap.String("task_id", p.TaskID), zap.Error(err))
		if final {
			pr.retryFinal(ctx, p, ttl)
		}
	}
	return p
}

// finalRetryFor bounds how long a run retries its final state when Redis
// does not take it (a master failing over). That state is what watchers
// wait for: lost, the task's hash would say "active" until it expires
// while asynq records the task completed. The handler returns only after
// it, so asynq's own write of the task's end goes to a Redis that answers
// again too (asynq does not retry that write: docs/operations.md,
// "Failover"). Longer than a promotion with production timeouts
// (cluster-node-timeout of 15 s, Sentinel's down-after-milliseconds of
// 30 s, plus the election). Past asynq's task lease (30 s without Redis)
// asynq has given up on the run anyway and retries the task after its
// lease recovery; the state published meanwhile still ends the wait of
// the task's watchers.
const finalRetryFor = time.Minute

// retryFinal publishes p, a run's final state whose first publish failed,
// until Redis takes it, for at most finalRetryFor or until the worker
// stops. Bytes moved were counted by the first attempt or are left out:
// a part of a cluster pipeline may have been applied. It gives up as soon
// as another run owns the task: the run publishes its end after it
// released its ownership, so an owner now is a takeover (of a run whose
// retry asynq could not record), whose progress a late "retrying" of this
// run must not overwrite.
func (pr *progress) retryFinal(ctx context.Context, p tasks.Progress, ttl time.Duration) {
	start := time.Now()
	log := pr.w.log.With(zap.String("task_id", p.TaskID))
	for wait := 200 * time.Millisecond; time.Since(start) < finalRetryFor && !pr.w.stopping.Load(); wait = min(2*wait, 2*time.Second) {
		time.Sleep(wait)
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		// Published only once Redis has answered that nobody owns it:
		// the publish's own retries could otherwise reach a Redis that
		// came back after the ownership check failed.
		owned, err := pr.w.ckpt.Owned(pctx, p.TaskID)
		if err == nil && !owned {
			err = tasks.PublishProgressMoved(pctx, pr.w.rdb, p, ttl, 0)
		}
		cancel()
		switch {
		case owned:
			log.Info("another run owns the task now; its progress is that run's to publish", zap.Duration("after", time.Since(start)))
			return
		case err == nil:
			log.Info("published the task's final state after Redis came back", zap.Duration("after", time.Since(start)))
			return
		}
	}
	log.Warn("gave up publishing the task's final state: its progress keeps its last published state", zap.Duration("after", time.Since(start)))
}
