package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/tasks"
)

// Cancel, every way it comes (see docs/worker.md, "Cancel, failure,
// shutdown"):
//
//   - tasks.Client.Cancel (ferry cancel, the HTTP API, the dashboard) sets
//     the task's flag and publishes its id on tasks.CancelChannel;
//   - asynqmon's Cancel button and Inspector.CancelProcessing publish it on
//     asynq's own channel (asynqCancelChannel), and asynq's server cancels
//     the handler's context.
//
// Every worker subscribes to both. The one running the task cancels the
// run's context with the cause errCancelled: the request in flight is
// dropped, whatever the task type, the handler aborts its multipart upload
// and the task ends archived as cancelled by user. For a task that was not
// running (Client.Cancel archived it), one worker aborts the uploads the
// registry records for it at once (the janitor, for that task alone).
//
// asynq's context of a run is not the handler's: a run's context ends only
// through this worker's cancel, its deadline, or (after cancelGrace) an
// asynq cancellation that no cancel message explains — a lost lease, after
// which another worker may run the task and nothing must be aborted.

// asynqCancelChannel is asynq's pub/sub channel of cancellations
// (internal/base.CancelChannel in asynq v0.26): what asynqmon's Cancel
// button and Inspector.CancelProcessing publish a task id on.
// TestAsynqmonCancelStops fails if asynq renames it.
const asynqCancelChannel = "asynq:cancel"

const (
	// cancelGrace is how long a run whose asynq context was cancelled waits
	// for the cancel message (both subscriptions receive the same one)
	// before it takes the cancellation for a lost lease.
	cancelGrace = time.Second
	// recentCancelTTL is how long a cancel message for a task not running
	// here is remembered: a run of it that starts right after the message
	// (dequeued as the cancel was sent) is stopped at once.
	recentCancelTTL = 10 * time.Second
	// cancelRetryDelay is the retry delay of a run asynq saw cancelled: a
	// user's cancel, which this worker archives meanwhile, once the run
	// has stopped (and aborted its upload).
	cancelRetryDelay = 5 * time.Minute
	// cancelAbortLock is how long the worker that aborts a cancelled
	// task's uploads keeps the others from doing the same.
	cancelAbortLock = time.Minute
)

// activeRun is one run of a task on this worker.
type activeRun struct {
	cancel  context.CancelCauseFunc
	user    chan struct{} // closed by a user's cancel
	once    sync.Once
	archive sync.Once
}

// stop ends the run as cancelled by user.
func (r *activeRun) stop() {
	r.once.Do(func() {
		close(r.user)
		r.cancel(errCancelled)
	})
}

func (r *activeRun) cancelled() bool {
	select {
	case <-r.user:
		return true
	default:
		return false
	}
}

// activeRuns is the set of task runs on this worker, by task id (an asynq
// run and a takeover of one task may both be here).
type activeRuns struct {
	mu     sync.Mutex
	byID   map[string][]*activeRun
	recent map[string]time.Time
}

// add registers a run of id; a cancel of id heard in the last
// recentCancelTTL stops it at once.
func (rs *activeRuns) add(id string, cancel context.CancelCauseFunc) *activeRun {
	r := &activeRun{cancel: cancel, user: make(chan struct{})}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.byID == nil {
		rs.byID = map[string][]*activeRun{}
	}
	rs.byID[id] = append(rs.byID[id], r)
	if at, ok := rs.recent[id]; ok && time.Since(at) < recentCancelTTL {
		r.stop()
	}
	return r
}

func (rs *activeRuns) remove(id string, r *activeRun) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	runs := rs.byID[id]
	for i, x := range runs {
		if x == r {
			runs = append(runs[:i], runs[i+1:]...)
			break
		}
	}
	if len(runs) == 0 {
		delete(rs.byID, id)
	} else {
		rs.byID[id] = runs
	}
}

// stop stops every run of id on this worker and reports whether there was
// one; when there was none, the cancel is remembered for recentCancelTTL.
func (rs *activeRuns) stop(id string) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	runs := rs.byID[id]
	for _, r := range runs {
		r.stop()
	}
	if len(runs) > 0 {
		return true
	}
	now := time.Now()
	if rs.recent == nil {
		rs.recent = map[string]time.Time{}
	}
	for k, at := range rs.recent {
		if now.Sub(at) >= recentCancelTTL {
			delete(rs.recent, k)
		}
	}
	rs.recent[id] = now
	return false
}

// cancellable gives each run its own context, which a user's cancel ends
// with the cause errCancelled (see the top of this file), and returns a
// cancelled run's error as errCancelled, permanent: whatever the run was
// doing when its context ended failed because of the cancel.
func (w *Worker) cancellable(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id := taskIDOf(ctx)
		if id == "" {
			return next.ProcessTask(ctx, t)
		}
		queue, asynqRun := asynq.GetQueueName(ctx)
		base := ctx
		if asynqRun {
			// Detached from asynq's cancel (see asynqCancelled), with its
			// values and its deadline.
			base = context.WithoutCancel(ctx)
			if dl, ok := ctx.Deadline(); ok {
				var stopDeadline context.CancelFunc
				base, stopDeadline = context.WithDeadline(base, dl)
				defer stopDeadline()
			}
		}
		rctx, cancel := context.WithCancelCause(base)
		defer cancel(nil)
		r := w.runs.add(id, cancel)
		defer w.runs.remove(id, r)
		if asynqRun {
			stop := context.AfterFunc(ctx, func() { w.asynqCancelled(ctx, id, r) })
			defer stop()
		}
		err := next.ProcessTask(rctx, t)
		if err != nil && r.cancelled() {
			if asynqRun {
				// asynq may have seen its context cancelled before the
				// handler returned, and then set the task to retry instead
				// of archiving it. Archived only now, after the run
				// published its cancelled state (a watcher that finds the
				// task archived without it would report it failed).
				go w.archiveCancelled(id, queue, r)
			}
			if !errors.Is(err, errCancelled) {
				w.log.Debug("run stopped by a cancel", zap.String("task_id", id), zap.Error(err))
				err = permanent(errCancelled)
			}
		}
		return err
	})
}

// asynqCancelled runs when asynq cancels a run's context: a user's cancel
// through asynq (its message reaches this worker's subscription too), a
// lost lease, or the deadline.
func (w *Worker) asynqCancelled(ctx context.Context, id string, r *activeRun) {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || w.stopping.Load() {
		// The deadline, or asynq's shutdown timeout requeued the task.
		r.cancel(context.Cause(ctx))
		return
	}
	user := false
	select {
	case <-r.user:
		user = true
	case <-time.After(cancelGrace):
		// No message: a cancel this worker missed shows in the flag.
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		user, _ = tasks.Cancelled(fctx, w.rdb, id)
		cancel()
	}
	if !user {
		// asynq's lease on the task expired: another worker may run it
		// now. Stop, leaving the upload and checkpoint to that run.
		r.cancel(context.Cause(ctx))
		return
	}
	r.stop() // the run archives the task when it returns
}

// archiveCancelled archives a user-cancelled task that asynq moved to retry
// when it saw the run's context cancelled. Its error in asynq stays
// asynq's ("context canceled"); its progress says cancelled by user.
func (w *Worker) archiveCancelled(id, queue string, r *activeRun) {
	r.archive.Do(func() {
		log := w.log.With(zap.String("task_id", id), zap.String("queue", queue))
		for deadline := time.Now().Add(30 * time.Second); ; {
			ti, err := w.insp.GetTaskInfo(queue, id)
			switch {
			case err != nil:
				log.Warn("cancelled task: could not read its state to archive it", zap.Error(err))
				return
			case ti.State == asynq.TaskStateArchived || ti.State == asynq.TaskStateCompleted:
				return
			case ti.State == asynq.TaskStateActive:
				// asynq has not moved it yet (or archives it itself).
				if time.Now().After(deadline) {
					log.Warn("cancelled task still active after 30 s; not archived")
					return
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if err := w.insp.ArchiveTask(queue, id); err != nil {
				log.Warn("could not archive a cancelled task", zap.Error(err))
				return
			}
			log.Info("cancelled task archived (asynq had set it to retry)")
			return
		}
	})
}

// subscribeCancels subscribes to both cancel channels and handles their
// messages until the returned stop is called.
func (w *Worker) subscribeCancels(ctx context.Context) (stop func(), err error) {
	ps := w.rdb.Subscribe(ctx, tasks.CancelChannel, asynqCancelChannel)
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("worker: subscribe to cancels: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for msg := range ps.Channel() {
			wg.Go(func() { w.onCancel(msg.Channel, msg.Payload) })
		}
	})
	return func() { _ = ps.Close(); wg.Wait() }, nil
}

// onCancel handles one cancel message: it stops the task's runs on this
// worker; a task cancelled through asynq gets ferry's flag too (for a run
// that missed the message, and for the janitor). A task Client.Cancel
// cancelled that runs nowhere has its recorded uploads aborted.
func (w *Worker) onCancel(channel, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := w.log.With(zap.String("task_id", id))
	if w.runs.stop(id) {
		log.Info("cancel: stopping the task's run on this worker", zap.String("channel", channel))
		if channel == asynqCancelChannel {
			if err := tasks.MarkCancelled(ctx, w.rdb, id); err != nil {
				log.Warn("cancel through asynq: could not set ferry's cancel flag", zap.Error(err))
			}
		}
		return
	}
	if channel != tasks.CancelChannel {
		return
	}
	ok, err := w.rdb.SetNX(ctx, cancelAbortKey(id), "1", cancelAbortLock).Result()
	if err != nil || !ok {
		return // another worker aborts them (or the janitor will)
	}
	rep, err := w.janitor(ctx, w.cfg.JanitorUploadTTL, id)
	if err != nil {
		log.Warn("cancel: could not abort the task's uploads now; the janitor will", zap.Error(err))
		return
	}
	if rep.Aborted > 0 || len(rep.Errors) > 0 {
		log.Info("cancel: aborted the uploads of a task that was not running", zap.Int("aborted", rep.Aborted), zap.Strings("errors", rep.Errors))
	}
}

// checkCancel returns errCancelled when a user cancelled the task: its
// context says so, or (a message missed) its flag.
func (w *Worker) checkCancel(ctx context.Context, taskID string) error {
	if errors.Is(context.Cause(ctx), errCancelled) {
		return errCancelled
	}
	c, err := tasks.Cancelled(ctx, w.rdb, taskID)
	if err != nil {
		return fmt.Errorf("check cancel flag: %w", err)
	}
	if c {
		return errCancelled
	}
	return nil
}

// cancelledErr is err, or errCancelled when ctx was ended by a user's
// cancel.
func cancelledErr(ctx context.Context, err error) error {
	if err != nil && !errors.Is(err, errCancelled) && errors.Is(context.Cause(ctx), errCancelled) {
		return errCancelled
	}
	return err
}
