package worker

import (
	"context"
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
	pr := &progress{w: w, runStart: now, lastPub: now, p: tasks.Progress{TaskID: id, Type: typ, State: tasks.StateActive,
		StartedAt: now, Source: src, Dest: dst}}
	pr.first = time.AfterFunc(progressInterval, func() { pr.publish(ctx) })
	return pr
}

// setTotal sets the totals once they are known.
func (pr *progress) setTotal(bytes int64, parts int) {
	pr.mu.Lock()
	pr.p.BytesTotal, pr.p.PartsTotal = bytes, parts
	pr.mu.Unlock()
}

// resumed reports the bytes a checkpoint already holds, at once, so a
// resumed upload never starts from zero.
func (pr *progress) resumed(ctx context.Context, bytes int64, parts int) {
	pr.mu.Lock()
	pr.p.BytesDone, pr.p.PartsDone, pr.p.ResumedFrom = bytes, parts, bytes
	pr.runBase = bytes
	pr.mu.Unlock()
	pr.publish(ctx)
}

// add counts finished bytes (and parts); a finished part always publishes.
func (pr *progress) add(ctx context.Context, bytes int64, parts int) {
	pr.mu.Lock()
	pr.p.BytesDone += bytes
	pr.p.PartsDone += parts
	due := parts > 0 || time.Since(pr.lastPub) >= progressInterval
	pr.mu.Unlock()
	if due {
		pr.publish(ctx)
	}
}

// setDone sets the bytes done (for callers that count totals) and
// publishes as for a finished part.
func (pr *progress) setDone(ctx context.Context, done int64) {
	pr.mu.Lock()
	pr.p.BytesDone = done
	pr.p.PartsDone++
	pr.mu.Unlock()
	pr.publish(ctx)
}

// setBytes sets the bytes done without publishing (a migration's total
// bytes copied, published with its counters).
func (pr *progress) setBytes(done int64) {
	pr.mu.Lock()
	pr.p.BytesDone = done
	pr.mu.Unlock()
}

// counters sets aggregate counters (deletes, migrations) and publishes when due.
func (pr *progress) counters(ctx context.Context, c map[string]int64, force bool) {
	pr.mu.Lock()
	pr.p.Counters = c
	due := force || time.Since(pr.lastPub) >= progressInterval
	pr.mu.Unlock()
	if due {
		pr.publish(ctx)
	}
}

// finish publishes the final state.
func (pr *progress) finish(ctx context.Context, state tasks.State) {
	pr.mu.Lock()
	pr.p.State = state
	if state == tasks.StateCompleted && pr.p.BytesTotal > 0 {
		pr.p.BytesDone = pr.p.BytesTotal
	}
	pr.mu.Unlock()
	pr.emit(ctx, true)
}

// close stops publishing: after the handler returns, the error handler
// writes the final state, and nothing may overwrite it.
func (pr *progress) close() {
	pr.first.Stop()
	pr.pubMu.Lock()
	pr.closed = true
	pr.pubMu.Unlock()
}

func (pr *progress) publish(ctx context.Context) { pr.emit(ctx, false) }

func (pr *progress) emit(ctx context.Context, final bool) {
	pr.pubMu.Lock()
	defer pr.pubMu.Unlock()
	if pr.closed {
		return
	}
	if final {
		pr.closed = true
		pr.first.Stop()
	}
	pr.mu.Lock()
	now := time.Now()
	if el := now.Sub(pr.runStart).Seconds(); el > 0 {
		pr.p.Rate = float64(pr.p.BytesDone-pr.runBase) / el
	}
	pr.p.UpdatedAt = now
	pr.lastPub = now
	p := pr.p
	if p.Counters != nil {
		c := make(map[string]int64, len(p.Counters))
		for k, v := range p.Counters {
			c[k] = v
		}
		p.Counters = c
	}
	pr.mu.Unlock()
	var ttl time.Duration
	if p.State.Terminal() {
		ttl = pr.w.cfg.ProgressTTL
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := tasks.PublishProgress(pctx, pr.w.rdb, p, ttl); err != nil {
		pr.w.log.Warn("could not publish progress", zap.String("task_id", p.TaskID), zap.Error(err))
	}
}
