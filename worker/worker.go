package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
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
	cfg      Config
	log      *zap.Logger
	rdb      redis.UniversalClient
	srv      *asynq.Server
	insp     *asynq.Inspector // task states, for the janitor and migrations
	ckpt     *checkpoint.Store
	profiles *profiles
	sources  *sources
	buffers  *storage.BufferPool
	metrics  *Metrics
	// handler runs tasks for asynq and for takeovers.
	handler   asynq.Handler
	takeovers takeovers
	// stopping is set when shutdown begins: uploads stop at the next part
	// boundary and leave their checkpoint for the next worker.
	stopping atomic.Bool
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
		profiles: newProfiles(cfg.Profiles),
		buffers:  storage.NewBufferPool(cfg.MaxBufferMemory),
	}
	src, err := newSources(cfg.AllowDirs, cfg.AllowURLHosts, cfg.HTTPClient)
	if err != nil {
		return nil, err
	}
	w.sources = src
	w.insp = asynq.NewInspectorFromRedisClient(cfg.Redis)
	w.metrics.setBudget(cfg.MaxBufferMemory)
	w.srv = asynq.NewServerFromRedisClient(cfg.Redis, asynq.Config{
		Concurrency:       cfg.Concurrency,
		Queues:            cfg.Queues,
		StrictPriority:    cfg.StrictPriority,
		RetryDelayFunc:    retryDelay,
		ShutdownTimeout:   cfg.ShutdownTimeout,
		TaskCheckInterval: cfg.TaskCheckInterval,
		Logger:            cfg.Logger.Named("asynq").Sugar(),
		LogLevel:          asynq.WarnLevel,
		ErrorHandler:      asynq.ErrorHandlerFunc(w.onError),
	})
	w.handler = w.Handler()
	return w, nil
}

// Handler returns the task handler with its middleware, for tests and for
// embedding in another asynq server.
func (w *Worker) Handler() asynq.Handler {
	mux := asynq.NewServeMux()
	mux.Use(w.recoverPanics, w.logTasks)
	mux.HandleFunc(tasks.TypePut, w.handlePut)
	mux.HandleFunc(tasks.TypeUpload, w.handleUpload)
	mux.HandleFunc(tasks.TypeCopy, w.handleCopy)
	mux.HandleFunc(tasks.TypeMove, w.handleMove)
	mux.HandleFunc(tasks.TypeDelete, w.handleDelete)
	mux.HandleFunc(tasks.TypeMigrate, w.handleMigrate)
	mux.HandleFunc(tasks.TypeJanitor, w.handleJanitor)
	// A type this worker does not know can never succeed here: archive it
	// with its reason instead of retrying it until MaxRetry.
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if _, pattern := mux.Handler(t); pattern == "" {
			return fmt.Errorf("unknown task type %q: this worker runs ferry:put, ferry:upload, ferry:copy, ferry:move, ferry:delete, ferry:migrate and ferry:janitor: %w", t.Type(), asynq.SkipRetry)
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

// retryDelay retries a crashed worker's task (lease expired) or one stopped
// by a shutdown within about a second: its checkpoint makes the retry cheap,
// and asynq's default n⁴ backoff would leave it idle for minutes. Other
// failures back off exponentially with jitter, up to 5 minutes.
func retryDelay(n int, err error, _ *asynq.Task) time.Duration {
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
		switch {
		case err == nil:
			log.Info("task done", zap.Duration("took", time.Since(start)))
		case errors.Is(err, errCancelled):
			outcome = "cancelled"
			log.Info("task cancelled", zap.Duration("took", time.Since(start)))
		case errors.Is(err, asynq.SkipRetry) || lastAttempt(ctx):
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

// onError records the final state of failed tasks in their progress, so
// watchers see "failed" (archived) or "retrying" with the reason.
func (w *Worker) onError(ctx context.Context, t *asynq.Task, err error) {
	id, _ := asynq.GetTaskID(ctx)
	if id == "" {
		return
	}
	final := errors.Is(err, errCancelled) || errors.Is(err, asynq.SkipRetry) || lastAttempt(ctx)
	if !final && (errors.Is(err, errShuttingDown) || errors.Is(err, context.Canceled)) {
		return // requeued by asynq; the next worker reports on
	}
	w.publishFailure(ctx, id, t.Type(), err, lastAttempt(ctx))
}

// publishFailure records a failed run in the task's progress: "failed" for
// a permanent error or the last attempt, "cancelled", else "retrying".
func (w *Worker) publishFailure(ctx context.Context, id, typ string, err error, last bool) {
	state := tasks.StateRetrying
	switch {
	case errors.Is(err, errCancelled):
		state = tasks.StateCancelled
	case errors.Is(err, asynq.SkipRetry) || last:
		state = tasks.StateFailed
	}
	p := w.lastProgress(id, typ)
	p.State, p.Error, p.Rate = state, err.Error(), 0
	ttl := w.cfg.ProgressTTL
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if perr := tasks.PublishProgress(pctx, w.rdb, p, ttl); perr != nil {
		w.log.Warn("could not publish progress", zap.String("task_id", id), zap.Error(perr))
	}
}

// lastProgress reads the task's progress hash to update it, or starts one.
func (w *Worker) lastProgress(id, typ string) tasks.Progress {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := w.rdb.HGetAll(ctx, tasks.ProgressKey(id)).Result()
	if err == nil && len(h) > 0 {
		if p, err := tasks.ParseProgress(id, h); err == nil {
			return p
		}
	}
	return tasks.Progress{TaskID: id, Type: typ}
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
