package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// Worker runs ferry tasks from Redis against S3.
type Worker struct {
	cfg Config
	log *zap.Logger
	rdb redis.UniversalClient
	srv *asynq.Server
	// client enqueues what the worker enqueues itself (the janitor, webhook
	// deliveries, a migration's batches and copies) and cancels a
	// migration's children, as any producer does: one client, so each
	// enqueue clears a reused id's stale cancel flag the same way.
	client   *tasks.Client
	insp     *asynq.Inspector // task states, for the janitor and migrations; client's Inspector
	ckpt     checkpoints
	profiles *profiles
	sources  *sources
	buffers  *storage.BufferPool
	metrics  *Metrics
	webhooks *webhooks
	// handler runs tasks for asynq and for takeovers.
	handler   asynq.Handler
	takeovers takeovers
	// runs are the task runs on this worker, for cancels (cancel.go).
	runs activeRuns
	// stopping is set when shutdown begins: uploads stop at the next part
	// boundary and leave their checkpoint for the next worker.
	stopping atomic.Bool
	// beforeJanitorList, set only by tests, runs in a janitor run between
	// its reading the upload registry and its listing the buckets.
	beforeJanitorList func()
	// beforeExtrasDelete, set only by tests, runs in --delete-extra between
	// the listings that found the extras and their deletion.
	beforeExtrasDelete func()
	// beforeClaim, set only by tests, runs in acquire between the task's
	// takeover index entry and its claim.
	beforeClaim func(id string)
	// beforeMoveDelete, set only by tests, runs in a move between its last
	// check of the copy and its deletion of the source.
	beforeMoveDelete func(id string)
}

// checkpoints is what the worker uses of the checkpoint store
// (*checkpoint.Store in New): the interfaces of its three consumers, so
// that each can be tested with a fake of its own part.
type checkpoints interface {
	uploadCheckpoints // transfer.go
	ownership         // takeover.go
	checkpointIndex   // janitor.go
}

// errShuttingDown stops an upload at a part boundary during shutdown.
var errShuttingDown = errors.New("worker shutting down: the upload stopped at a part boundary and will resume from its checkpoint")

// errCancelled is a user's cancel; the task is archived, not retried.
var errCancelled = errors.New(tasks.CancelledError)

// New validates cfg and builds a worker; Run starts it.
func New(cfg Config) (*Worker, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, log: cfg.Logger, rdb: cfg.Redis, metrics: cfg.Metrics,
		ckpt:     checkpoint.New(cfg.Redis, checkpoint.Options{}),
		profiles: newProfiles(cfg.Profiles, cfg.requestsInFlight()),
		buffers:  storage.NewBufferPool(cfg.MaxBufferMemory),
	}
	src, err := newSources(cfg.AllowDirs, cfg.AllowURLHosts, cfg.HTTPClient)
	if err != nil {
		return nil, err
	}
	w.sources = src
	w.webhooks = newWebhooks(cfg)
	w.client = tasks.NewClient(cfg.Redis)
	w.insp = w.client.Inspector()
	w.metrics.setBudget(cfg.MaxBufferMemory)
	w.srv = asynq.NewServerFromRedisClient(cfg.Redis, asynq.Config{
		Concurrency:       cfg.Concurrency,
		Queues:            cfg.Queues,
		StrictPriority:    cfg.StrictPriority,
		RetryDelayFunc:    w.retryDelay,
		ShutdownTimeout:   cfg.ShutdownTimeout,
		TaskCheckInterval: cfg.TaskCheckInterval,
		Logger:            cfg.Logger.Named("asynq").Sugar(),
		LogLevel:          asynq.WarnLevel,
		ErrorHandler:      asynq.ErrorHandlerFunc(w.onError),
		// A run asynq saw cancelled (a user's cancel through asynq, which
		// the worker then archives: see cancel.go) is not a failure: no
		// retry is counted. asynq passes exactly ctx.Err() then.
		IsFailure: func(err error) bool { return err != context.Canceled },
	})
	w.handler = w.Handler()
	return w, nil
}

// Handler returns the task handler with its middleware, for tests and for
// embedding in another asynq server.
func (w *Worker) Handler() asynq.Handler {
	mux := asynq.NewServeMux()
	// notifyOnEnd is outermost: it sees a panic as the error it becomes.
	// cancellable is innermost: the handlers run in its context, the
	// others see the error a cancel becomes.
	mux.Use(w.notifyOnEnd, w.recoverPanics, w.logTasks, w.cancellable)
	handlers := []struct {
		typ string
		h   asynq.HandlerFunc
	}{
		{tasks.TypePut, w.handlePut}, {tasks.TypeUpload, w.handleUpload}, {tasks.TypeCopy, w.handleCopy},
		{tasks.TypeMove, w.handleMove}, {tasks.TypeDelete, w.handleDelete}, {tasks.TypeMigrate, w.handleMigrate},
		{tasks.TypeBatch, w.handleBatch}, {tasks.TypeNotify, w.handleNotify}, {tasks.TypeJanitor, w.handleJanitor},
	}
	types := make([]string, len(handlers))
	for i, h := range handlers {
		mux.Handle(h.typ, h.h)
		types[i] = h.typ
	}
	runs := strings.Join(types[:len(types)-1], ", ") + " and " + types[len(types)-1]
	// A type this worker does not know can never succeed here: archive it
	// with its reason instead of retrying it until MaxRetry.
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if _, pattern := mux.Handler(t); pattern == "" {
			return fmt.Errorf("unknown task type %q: this worker runs %s: %w", t.Type(), runs, asynq.SkipRetry)
		}
		return mux.ProcessTask(ctx, t)
	})
}

// Run processes tasks until ctx is cancelled, then shuts down gracefully:
// uploads stop at a part boundary, keep their checkpoint, and asynq puts
// their tasks back in the queue after ShutdownTimeout.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("worker: Redis is unreachable: %w", err)
	}
	// Subscribed before the first task runs: a cancel is never missed
	// for want of a subscription.
	stopCancels, err := w.subscribeCancels(ctx)
	if err != nil {
		return err
	}
	defer stopCancels()
	if err := w.srv.Start(w.handler); err != nil {
		return fmt.Errorf("worker: start: %w", err)
	}
	w.log.Info("worker started", zap.Int("concurrency", w.cfg.Concurrency), zap.Any("queues", w.cfg.Queues),
		zap.Strings("profiles", w.cfg.profileNames()), zap.Int64("buffer_budget", w.cfg.MaxBufferMemory))
	jctx, stopJanitor := context.WithCancel(context.Background())
	janitorDone := make(chan struct{})
	go func() { defer close(janitorDone); w.janitorLoop(jctx) }()
	lctx, stopLoop := context.WithCancel(context.Background())
	tctx, stopTakeovers := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		if w.cfg.TakeoverInterval > 0 {
			w.takeoverLoop(lctx, tctx)
		}
	}()
	<-ctx.Done()
	w.log.Info("worker shutting down", zap.Duration("timeout", w.cfg.ShutdownTimeout))
	w.stopping.Store(true)
	stopLoop()
	stopJanitor()
	<-janitorDone
	<-loopDone
	// Takeover runs stop at their next part boundary (stopping is set) and
	// release their ownership, so other workers continue them at once.
	cutoff := time.AfterFunc(w.cfg.ShutdownTimeout, stopTakeovers)
	w.srv.Shutdown()
	w.takeovers.wg.Wait()
	cutoff.Stop()
	stopTakeovers()
	_ = w.profiles.Close()
	w.log.Info("worker stopped")
	return nil
}

// retryDelay is asynq's RetryDelayFunc: deliveries back off for hours
// (notifyDelay), everything else as transferDelay says.
func (w *Worker) retryDelay(n int, err error, t *asynq.Task) time.Duration {
	if err == context.Canceled { //nolint:errorlint // asynq passes ctx.Err() itself
		// Only a cancel through asynq ends a run so; the worker archives
		// the task meanwhile (archiveCancelled).
		return cancelRetryDelay
	}
	if t.Type() == tasks.TypeNotify && !errors.Is(err, asynq.ErrLeaseExpired) {
		return w.notifyDelay(n)
	}
	return transferDelay(n, err, t)
}

// transferDelay retries a crashed worker's task (lease expired) or one stopped
// by a shutdown within about a second: its checkpoint makes the retry cheap,
// and asynq's default n⁴ backoff would leave it idle for minutes. Other
// failures back off exponentially with jitter, up to 5 minutes.
func transferDelay(n int, err error, _ *asynq.Task) time.Duration {
	if errors.Is(err, asynq.ErrLeaseExpired) || errors.Is(err, errShuttingDown) {
		return time.Second
	}
	d := time.Duration(1<<min(n, 8)) * time.Second
	d += time.Duration(rand.Int64N(int64(d/2) + 1))
	return min(d, 5*time.Minute)
}

// permanent marks err as not worth retrying: asynq archives the task with
// the error as its reason.
func permanent(err error) error {
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		return err
	}
	return fmt.Errorf("%w (%w)", err, asynq.SkipRetry)
}

// classify wraps the errors retrying cannot fix with SkipRetry.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, errCancelled) || storage.IsPermanent(err) || errors.Is(err, errNotAllowed) || errors.Is(err, errUnknownProfile) {
		return permanent(err)
	}
	return err
}

// lastAttempt reports whether this run is the task's last before archiving.
func lastAttempt(ctx context.Context) bool {
	n, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && n >= maxRetry
}

func (w *Worker) logTasks(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id := taskIDOf(ctx)
		n, _ := asynq.GetRetryCount(ctx)
		q, _ := asynq.GetQueueName(ctx)
		log := w.log.With(zap.String("task_id", id), zap.String("task_type", t.Type()), zap.String("queue", q), zap.Int("retry", n))
		start := time.Now()
		log.Debug("task started")
		err := next.ProcessTask(ctx, t)
		outcome := "success"
		state, _ := w.failedState(ctx, err)
		switch {
		case err == nil:
			log.Info("task done", zap.Duration("took", time.Since(start)))
		case errors.Is(err, errCancelled):
			outcome = "cancelled"
			log.Info("task cancelled", zap.Duration("took", time.Since(start)))
		case state == tasks.StateFailed:
			outcome = "failed"
			log.Error("task failed", zap.Error(err), zap.Duration("took", time.Since(start)))
		default:
			outcome = "retry"
			log.Warn("task will be retried", zap.Error(err), zap.Duration("took", time.Since(start)))
		}
		w.metrics.taskDone(t.Type(), outcome, time.Since(start))
		return err
	})
}

func (w *Worker) recoverPanics(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
		defer func() {
			if r := recover(); r != nil {
				w.log.Error("task handler panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
				err = fmt.Errorf("internal error (panic: %v); please report it", r)
			}
		}()
		return next.ProcessTask(ctx, t)
	})
}

// onError records the final state of a task that failed before its run
// started a progress (a payload that does not decode): runs that did publish
// their own (run, reported), so nothing is read back from Redis.
func (w *Worker) onError(ctx context.Context, t *asynq.Task, err error) {
	id, _ := asynq.GetTaskID(ctx)
	if id == "" || errors.As(err, new(reported)) {
		return
	}
	state, ok := w.failedState(ctx, err)
	if !ok {
		return // requeued by asynq; the next worker reports on
	}
	var ends transferEnds
	_ = json.Unmarshal(t.Payload(), &ends) // best effort: the payload may be what failed
	p := tasks.Progress{TaskID: id, Type: t.Type(), State: state, Error: err.Error(),
		Source: display(ends.Source), Dest: display(ends.Dest)}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if perr := tasks.PublishProgress(pctx, w.rdb, p, w.cfg.ProgressTTL); perr != nil {
		w.log.Warn("could not publish progress", zap.String("task_id", id), zap.Error(perr))
	}
}

// writeResult stores the final object as the task's result (shown by
// asynqmon and `ferry status`). Only the running handler writes it: writing
// for a task that no longer exists leaves an orphan hash (asynq #1167).
func writeResult(t *asynq.Task, v any) {
	if t.ResultWriter() == nil {
		return
	}
	b, err := json.Marshal(v)
	if err == nil {
		_, _ = t.ResultWriter().Write(b)
	}
}
