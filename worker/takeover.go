package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/checkpoint"
)

// Takeover: another worker continues a dead worker's upload within seconds.
//
// asynq notices a dead worker only when the task's lease (30 s) has expired
// and its recoverer (once a minute, with a 30 s cut-off) moves the task to
// retry: 60-120 s. ferry does not wait for that. Every checkpointed upload
// is owned (checkpoint.Claim) with a short expiry its worker renews every
// second; every worker's takeover loop looks, every TakeoverInterval, for
// uploads whose ownership expired while asynq still shows the task active,
// claims them with a new fencing token and runs the same handler for the
// same task id, resuming from the checkpoint (progress goes to the same id).
// When asynq later runs the task again, that run finds the upload owned
// (and waits) or marked done (and completes at once). docs/worker.md has
// the protocol and its races.
const (
	// ownershipTTL is how long an ownership lives unless renewed: the
	// longest pause a worker survives without losing its upload, and most
	// of the takeover delay after a crash.
	ownershipTTL = 5 * time.Second
	// renewEvery renews the ownership well within ownershipTTL.
	renewEvery = time.Second
	// ownerPoll is how often a run waiting for another owner looks again.
	ownerPoll = 500 * time.Millisecond
	// doneTTL keeps a takeover's done mark until asynq has run the task
	// again (normally within two minutes; longer if no worker is up).
	doneTTL = 7 * 24 * time.Hour
	// takeoverCooldown is how long a worker leaves alone a task whose
	// takeover it could not finish (a transient error), so it does not
	// hammer a failing source every interval.
	takeoverCooldown = 30 * time.Second
)

// claim is a run's ownership of a task's upload.
type claim struct {
	id    string
	token int64
	// takeover is set for a run started by the takeover loop, outside
	// asynq: it already holds the claim, and leaves a done mark for the
	// asynq run of the task when it completes.
	takeover bool
}

type claimKey struct{}

// withClaim marks ctx as a takeover run of c.id holding c.
func withClaim(ctx context.Context, c *claim) context.Context {
	return context.WithValue(ctx, claimKey{}, c)
}

func claimFrom(ctx context.Context) *claim {
	c, _ := ctx.Value(claimKey{}).(*claim)
	return c
}

// taskIDOf is the id of the task ctx runs: asynq's, or the one taken over.
func taskIDOf(ctx context.Context) string {
	if id, ok := asynq.GetTaskID(ctx); ok {
		return id
	}
	if c := claimFrom(ctx); c != nil {
		return c.id
	}
	return ""
}

// lostOwnership reports whether err (or ctx's cancel) comes from another
// worker owning the task now.
func lostOwnership(ctx context.Context, err error) bool {
	return errors.Is(err, checkpoint.ErrNotOwner) || errors.Is(context.Cause(ctx), checkpoint.ErrNotOwner)
}

// acquire returns the ownership of the task's upload, or done when a
// takeover already completed it. A run of asynq waits while another live
// worker owns the task (a takeover in progress, or the worker it was taken
// from); a takeover run already holds its claim.
func (w *Worker) acquire(ctx context.Context, id string, log *zap.Logger) (c *claim, done bool, err error) {
	if c := claimFrom(ctx); c != nil && c.takeover {
		return c, false, nil
	}
	done, err = w.ckpt.Done(ctx, id)
	if err != nil || done {
		return nil, done, err
	}
	queue, _ := asynq.GetQueueName(ctx)
	// Indexed before the claim: a claim the takeover loop cannot see
	// would leave a crash to asynq's slow recovery.
	if err := w.rdb.HSet(ctx, takeoverIndexKey, id, queue).Err(); err != nil {
		return nil, false, fmt.Errorf("index ownership: %w", err)
	}
	waiting := false
	for first := true; ; first = false {
		if !first {
			done, err := w.ckpt.Done(ctx, id)
			if err != nil || done {
				return nil, done, err
			}
		}
		token, err := w.ckpt.Claim(ctx, id, ownershipTTL)
		if err == nil {
			return &claim{id: id, token: token}, false, nil
		}
		if !errors.Is(err, checkpoint.ErrNotOwner) {
			return nil, false, err
		}
		if !waiting {
			log.Info("another worker owns this upload (a takeover); waiting until it finishes or stops")
			waiting = true
		}
		if w.stopping.Load() {
			<-ctx.Done() // as uploadFailed: requeued by asynq, no retry counted
			return nil, false, errShuttingDown
		}
		select {
		case <-ctx.Done():
			return nil, false, context.Cause(ctx)
		case <-time.After(ownerPoll):
		}
	}
}

// hold renews c until the returned stop is called. When the ownership is
// lost (another worker claimed it, or Redis could not be reached for a
// whole ownershipTTL) the returned context is cancelled with a cause
// wrapping checkpoint.ErrNotOwner, so the upload stops at once.
func (w *Worker) hold(ctx context.Context, c *claim) (context.Context, func()) {
	octx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(renewEvery)
		defer t.Stop()
		lastOK := time.Now()
		for {
			select {
			case <-octx.Done():
				return
			case <-t.C:
			}
			err := w.ckpt.Renew(octx, c.id, c.token, ownershipTTL)
			switch {
			case err == nil:
				lastOK = time.Now()
			case errors.Is(err, checkpoint.ErrNotOwner):
				cancel(err)
				return
			case time.Since(lastOK) >= ownershipTTL:
				cancel(fmt.Errorf("ownership not renewed for %s (%w): %w", ownershipTTL, err, checkpoint.ErrNotOwner))
				return
			}
		}
	}()
	return octx, func() { cancel(nil); <-done }
}

// release ends a run's ownership after its upload returned err. A completed
// takeover leaves the done mark for asynq's run of the task; a run stopped
// by a shutdown or a takeover that failed for now stays indexed, so the
// takeover loop of another worker continues it at once; anything else
// leaves the task to asynq (done, or retried or archived by it). The index
// entry goes before the ownership: the loop never sees an indexed task
// without an owner whose run is only finishing.
func (w *Worker) release(ctx context.Context, c *claim, err error, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var rerr error
	switch {
	case lostOwnership(ctx, err):
		return // not ours to release
	case err == nil && c.takeover:
		rerr = w.ckpt.MarkDone(ctx, c.id, c.token, doneTTL)
		if rerr == nil {
			rerr = w.rdb.HDel(ctx, takeoverIndexKey, c.id).Err()
		}
	case errors.Is(err, errShuttingDown) || (c.takeover && !errors.Is(classify(err), asynq.SkipRetry)):
		rerr = w.ckpt.Release(ctx, c.id, c.token)
	default:
		rerr = w.rdb.HDel(ctx, takeoverIndexKey, c.id).Err()
		if rerr == nil {
			rerr = w.ckpt.Release(ctx, c.id, c.token)
		}
	}
	if rerr != nil {
		// The ownership expires by itself within ownershipTTL.
		log.Warn("could not release the upload's ownership", zap.Error(rerr))
	}
}

// takeoverLoop looks for uploads to take over until ctx is cancelled; the
// takeovers it starts run with runCtx.
func (w *Worker) takeoverLoop(ctx, runCtx context.Context) {
	t := time.NewTicker(w.cfg.TakeoverInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.takeoverScan(ctx, runCtx); err != nil && ctx.Err() == nil {
			w.log.Warn("takeover scan failed", zap.Error(err))
		}
	}
}

// takeovers tracks this worker's takeover runs and its cooldowns.
type takeovers struct {
	mu      sync.Mutex
	running map[string]bool
	retryAt map[string]time.Time
	wg      sync.WaitGroup
}

// begin reserves id for a takeover run unless one runs, it cools down, or
// limit runs are going already.
func (tk *takeovers) begin(id string, limit int) bool {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.running == nil {
		tk.running, tk.retryAt = map[string]bool{}, map[string]time.Time{}
	}
	if tk.running[id] || len(tk.running) >= limit || time.Now().Before(tk.retryAt[id]) {
		return false
	}
	tk.running[id] = true
	delete(tk.retryAt, id)
	return true
}

func (tk *takeovers) end(id string, cooldown time.Duration) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	delete(tk.running, id)
	if cooldown > 0 {
		tk.retryAt[id] = time.Now().Add(cooldown)
	}
}

// takeoverScan claims each indexed upload of this worker's queues whose
// ownership expired while asynq still shows its task active (its worker
// died or hangs), and continues it in a new goroutine.
func (w *Worker) takeoverScan(ctx, runCtx context.Context) error {
	index, err := w.rdb.HGetAll(ctx, takeoverIndexKey).Result()
	if err != nil {
		return fmt.Errorf("read ownership index: %w", err)
	}
	for id, queue := range index {
		if _, ok := w.cfg.Queues[queue]; !ok || ctx.Err() != nil {
			continue
		}
		if owned, err := w.ckpt.Owned(ctx, id); err != nil || owned {
			continue
		}
		if done, err := w.ckpt.Done(ctx, id); err != nil || done {
			continue
		}
		ti, err := w.insp.GetTaskInfo(queue, id)
		if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
			w.rdb.HDel(ctx, takeoverIndexKey, id)
			continue
		}
		if err == nil && (ti.State == asynq.TaskStateCompleted || ti.State == asynq.TaskStateArchived) {
			w.rdb.HDel(ctx, takeoverIndexKey, id)
			continue
		}
		if err != nil || ti.State != asynq.TaskStateActive {
			continue // asynq runs it (pending, retry)
		}
		if !w.takeovers.begin(id, w.cfg.Concurrency) {
			continue
		}
		token, err := w.ckpt.Claim(ctx, id, ownershipTTL)
		if err != nil {
			w.takeovers.end(id, 0)
			continue
		}
		// Claimed after the checks: the run we saw without an owner may
		// have finished meanwhile (it unindexes before it releases).
		still, _ := w.rdb.HExists(ctx, takeoverIndexKey, id).Result()
		done, _ := w.ckpt.Done(ctx, id)
		if !still || done {
			_ = w.ckpt.Release(ctx, id, token)
			w.takeovers.end(id, 0)
			continue
		}
		w.takeovers.wg.Add(1)
		go func() {
			defer w.takeovers.wg.Done()
			w.takeOver(runCtx, &claim{id: id, token: token, takeover: true}, ti)
		}()
	}
	return nil
}

// takeOver runs the task's handler for its id outside asynq, holding c.
func (w *Worker) takeOver(ctx context.Context, c *claim, ti *asynq.TaskInfo) {
	log := w.log.With(zap.String("task_id", c.id), zap.String("task_type", ti.Type), zap.String("queue", ti.Queue))
	log.Info("taking over an upload whose worker stopped renewing its ownership", zap.Int64("token", c.token))
	err := w.handler.ProcessTask(withClaim(ctx, c), asynq.NewTask(ti.Type, ti.Payload))
	// A handler that failed before its upload started never released.
	_ = w.ckpt.Release(context.WithoutCancel(ctx), c.id, c.token)
	cooldown := time.Duration(0)
	switch {
	case err == nil:
		log.Info("takeover completed the upload; asynq's own run of the task will find it done")
	case lostOwnership(ctx, err):
		log.Info("takeover lost the upload to another worker", zap.Error(err))
	case errors.Is(err, asynq.SkipRetry):
		// asynq's run of the task fails the same way and archives it;
		// show the reason now.
		w.publishFailure(ctx, c.id, ti.Type, err, false)
	default:
		cooldown = takeoverCooldown
		log.Warn("takeover stopped; the upload stays resumable", zap.Error(err))
	}
	w.takeovers.end(c.id, cooldown)
}
