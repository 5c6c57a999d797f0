package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/checkpoint"
)

// Takeover: another worker continues a dead worker's task within seconds.
//
// asynq notices a dead worker only when the task's lease (30 s) has expired
// and its recoverer (once a minute, with a 30 s cut-off) moves the task to
// retry: 60-120 s. ferry does not wait for that. Every run of a resumable
// task — a checkpointed upload or copy, a migration, a recursive delete, a
// batch — owns its task (checkpoint.Claim) with a short expiry its worker
// renews every second (runOwned); every worker's takeover loop looks, every
// TakeoverInterval, for tasks whose ownership expired while asynq still
// shows the task active, claims them with a new fencing token and runs the
// same handler for the same task id, resuming from the task's own record
// (the checkpoint's parts, the migration's cursor, the listing that is left,
// the batch's finished items); progress goes to the same id. When asynq
// later runs the task again, that run finds the task owned (and waits) or
// marked done with the takeover's outcome (and ends the same way at once).
// docs/worker.md has the protocol, per task kind, and its races.
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

// ownership is what the takeover frame uses of the checkpoint store
// (*checkpoint.Store): a task's ownership with its fencing token, and the
// done mark a takeover leaves.
type ownership interface {
	Claim(ctx context.Context, taskID string, ttl time.Duration) (int64, error)
	Renew(ctx context.Context, taskID string, token int64, ttl time.Duration) error
	CheckOwner(ctx context.Context, taskID string, token int64) error
	Owned(ctx context.Context, taskID string) (bool, error)
	Release(ctx context.Context, taskID string, token int64) error
	Fenced(ctx context.Context, taskID string, token int64, fn func(redis.Pipeliner) error) error
	MarkDone(ctx context.Context, taskID string, token int64, ttl time.Duration, outcome []byte) error
	Done(ctx context.Context, taskID string) (outcome []byte, done bool, err error)
	ClearDone(ctx context.Context, taskID string) error
}

// claim is a run's ownership of a task.
type claim struct {
	id    string
	token int64
	// queue is the task's queue: a takeover run has no asynq metadata.
	queue string
	// takeover is set for a run started by the takeover loop, outside
	// asynq: it already holds the claim, and leaves a done mark with its
	// outcome for the asynq run of the task when it ends the task.
	takeover bool
}

// outcome is how a takeover run ended a task, kept in its done mark: the
// task's run of asynq ends the same way, without running the task again.
type outcome struct {
	// Result is the run's result (its JSON), for the task's result.
	Result json.RawMessage `json:"result,omitempty"`
	// Error is a permanent failure's reason; Cancelled a user's cancel.
	Error     string `json:"error,omitempty"`
	Cancelled bool   `json:"cancelled,omitempty"`
}

// newOutcome records a run that ended with res and err (nil or final).
func newOutcome(res any, err error) []byte {
	var o outcome
	if res != nil {
		o.Result, _ = json.Marshal(res)
	}
	switch {
	case errors.Is(err, errCancelled):
		o.Cancelled = true
	case err != nil:
		o.Error = err.Error()
	}
	b, _ := json.Marshal(o)
	return b
}

// parseOutcome reads a done mark; a mark without an outcome (written by an
// earlier version, which marked only completed uploads) is a success.
func parseOutcome(b []byte) *outcome {
	var o outcome
	_ = json.Unmarshal(b, &o)
	return &o
}

// err is the error the run that finds o returns.
func (o *outcome) err() error {
	switch {
	case o.Cancelled:
		return errCancelled
	case o.Error != "":
		return permanent(fmt.Errorf("a takeover of this task ended it: %s", o.Error))
	}
	return nil
}

// replay ends a run as the takeover that recorded o ended the task: its
// result, decoded as the handler's, and its error.
func replay[T any](_ context.Context, o *outcome) (T, error) {
	var res T
	if len(o.Result) > 0 {
		if err := json.Unmarshal(o.Result, &res); err != nil {
			return res, fmt.Errorf("read the takeover's result: %w", err)
		}
	}
	return res, o.err()
}

type claimKey struct{}

// withClaim marks ctx as a run of c.id holding c.
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

// queueOf is the queue of the task ctx runs.
func queueOf(ctx context.Context) string {
	if q, ok := asynq.GetQueueName(ctx); ok {
		return q
	}
	if c := claimFrom(ctx); c != nil {
		return c.queue
	}
	return ""
}

// endedByTakeover returns ti as asynq will show it once its own run has
// ended from a takeover's done mark — completed with the takeover's result,
// or archived with its reason — and true, when ti is still active in asynq
// but a takeover ended the task: a migration counts its batches and copies
// taken over at once, instead of after asynq's lease recovery (60–120 s).
// Otherwise it returns ti and false.
func (w *Worker) endedByTakeover(ctx context.Context, ti *asynq.TaskInfo) (*asynq.TaskInfo, bool) {
	if ti == nil || ti.State != asynq.TaskStateActive {
		return ti, false
	}
	b, done, err := w.ckpt.Done(ctx, ti.ID)
	if err != nil || !done {
		return ti, false
	}
	o := parseOutcome(b)
	ended := *ti
	ended.Result = o.Result
	switch {
	case o.Cancelled:
		ended.State, ended.LastErr = asynq.TaskStateArchived, errCancelled.Error()
	case o.Error != "":
		ended.State, ended.LastErr = asynq.TaskStateArchived, o.Error
	default:
		ended.State = asynq.TaskStateCompleted
	}
	return &ended, true
}

// checkOwner is the fence before a write outside Redis (a DeleteObjects):
// nil while ctx's run still owns task id (or runs without an ownership),
// else an error wrapping checkpoint.ErrNotOwner.
func (w *Worker) checkOwner(ctx context.Context, id string) error {
	c := claimFrom(ctx)
	if c == nil || c.id != id {
		return nil
	}
	return w.ckpt.CheckOwner(ctx, id, c.token)
}

// fenced runs fn's commands in one transaction that applies only while
// ctx's run still owns task id (checkpoint.Fenced); fn touches only keys
// hash-tagged with id.
func (w *Worker) fenced(ctx context.Context, id string, fn func(redis.Pipeliner) error) error {
	c := claimFrom(ctx)
	if c == nil || c.id != id {
		_, err := w.rdb.TxPipelined(ctx, fn)
		return err
	}
	return w.ckpt.Fenced(ctx, id, c.token, fn)
}

// runOwned runs body as the owner of task id, the frame of every resumable
// task kind: it claims the task (or waits while another live worker owns
// it), renews the claim while body runs (body's context carries it, for
// checkOwner and fenced, and ends when the claim is lost), and releases it
// as body's outcome says. A run that finds the task marked done by a
// takeover ends with ended(the takeover's outcome) instead, after taking
// over the takeover's published progress (prog), which it never overwrites
// while it waits. A run of asynq that loses
// its ownership (it paused longer than ownershipTTL and another worker took
// over) stops writing and waits likewise; a run stopped by a shutdown keeps
// running until asynq's shutdown timeout requeues its task (returning at
// once would count a retry), released already so that another worker's
// takeover continues it now.
func runOwned[T any](ctx context.Context, w *Worker, id string, log *zap.Logger, prog *progress,
	body func(context.Context) (T, error), ended func(context.Context, *outcome) (T, error)) (T, error) {
	for {
		prog.quiet()
		c, out, err := w.acquire(ctx, id, log)
		if err != nil {
			var zero T
			return zero, err
		}
		if out != nil {
			log.Info("a takeover finished this task")
			prog.adopt(ctx)
			res, err := ended(ctx, out)
			if err == nil || errors.Is(err, asynq.SkipRetry) || errors.Is(err, errCancelled) {
				w.rdb.HDel(ctx, takeoverIndexKey, id)
				if cerr := w.ckpt.ClearDone(ctx, id); cerr != nil {
					log.Warn("could not clear the takeover's done mark (it expires)", zap.Error(cerr))
				}
			}
			return res, err
		}
		prog.owning()
		octx, stop := w.hold(ctx, c)
		res, err := body(withClaim(octx, c))
		stop()
		if err != nil && !errors.Is(err, checkpoint.ErrNotOwner) && lostOwnership(octx, err) {
			// Stopped by hold's cancel: say why.
			err = fmt.Errorf("%w (stopped writing: %w)", context.Cause(octx), err)
		}
		w.release(ctx, c, res, err, log)
		switch {
		case errors.Is(err, errShuttingDown) && !c.takeover:
			<-ctx.Done()
			return res, err
		case c.takeover || err == nil || !lostOwnership(ctx, err):
			return res, err
		}
		log.Warn("lost the ownership of this task to another worker (paused longer than its expiry?); stopped writing, waiting for that worker", zap.Error(err))
	}
}

// lostOwnership reports whether err (or ctx's cancel) comes from another
// worker owning the task now.
func lostOwnership(ctx context.Context, err error) bool {
	return errors.Is(err, checkpoint.ErrNotOwner) || errors.Is(context.Cause(ctx), checkpoint.ErrNotOwner)
}

// acquire returns the ownership of the task, or the outcome a takeover
// recorded when it ended the task. A run of asynq waits while another live
// worker owns the task (a takeover in progress, or the worker it was taken
// from); a run that holds its claim already (a takeover) has it returned.
func (w *Worker) acquire(ctx context.Context, id string, log *zap.Logger) (*claim, *outcome, error) {
	if c := claimFrom(ctx); c != nil && c.id == id {
		return c, nil, nil
	}
	ended := func() (*outcome, error) {
		b, done, err := w.ckpt.Done(ctx, id)
		if err != nil || !done {
			return nil, err
		}
		return parseOutcome(b), nil
	}
	if out, err := ended(); err != nil || out != nil {
		return nil, out, err
	}
	queue := queueOf(ctx)
	// Indexed before the claim: a claim the takeover loop cannot see
	// would leave a crash to asynq's slow recovery.
	if err := indexTask.Run(ctx, w.rdb, []string{takeoverIndexKey}, id, queue).Err(); err != nil {
		return nil, nil, fmt.Errorf("index ownership: %w", err)
	}
	if w.beforeClaim != nil {
		w.beforeClaim(id)
	}
	waiting := false
	for first := true; ; first = false {
		if !first {
			if out, err := ended(); err != nil || out != nil {
				return nil, out, err
			}
		}
		token, err := w.ckpt.Claim(ctx, id, ownershipTTL)
		if err == nil {
			return &claim{id: id, token: token, queue: queue}, nil, nil
		}
		if !errors.Is(err, checkpoint.ErrNotOwner) {
			return nil, nil, err
		}
		if !waiting {
			log.Info("another worker owns this task (a takeover); waiting until it finishes or stops")
			waiting = true
		}
		if w.stopping.Load() {
			<-ctx.Done() // as uploadFailed: requeued by asynq, no retry counted
			return nil, nil, errShuttingDown
		}
		select {
		case <-ctx.Done():
			return nil, nil, context.Cause(ctx)
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

// release ends a run's ownership after its body returned res and err. A
// takeover that ended the task (completed it, or failed or was cancelled
// for good) leaves the done mark with its outcome for asynq's run of the
// task; a run stopped by a shutdown or a takeover that failed for now
// stays indexed, so the takeover loop of another worker continues it at
// once. A run of asynq that failed for now stays indexed too, stamped
// anew (retryLater): asynq retries the task, and the loop removes the
// entry once asynq shows the task waiting for its retry (takeoverScan),
// keeping it only while asynq shows it active with no owner, its retry
// unrecorded. A run that succeeded or failed
// for good leaves the task to asynq. The index entry goes before the
// ownership: the loop never sees an indexed task without an owner whose
// run is only finishing.
func (w *Worker) release(ctx context.Context, c *claim, res any, err error, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var rerr error
	switch {
	case lostOwnership(ctx, err):
		return // not ours to release
	case c.takeover && (err == nil || errors.Is(classify(err), asynq.SkipRetry)):
		rerr = w.ckpt.MarkDone(ctx, c.id, c.token, doneTTL, newOutcome(res, err))
		if rerr == nil {
			rerr = w.rdb.HDel(ctx, takeoverIndexKey, c.id).Err()
		}
	case errors.Is(err, errShuttingDown) || c.takeover:
		rerr = w.ckpt.Release(ctx, c.id, c.token)
	case err != nil && !errors.Is(classify(err), asynq.SkipRetry):
		rerr = errors.Join(w.retryLater(ctx, c), w.ckpt.Release(ctx, c.id, c.token))
	default:
		rerr = w.rdb.HDel(ctx, takeoverIndexKey, c.id).Err()
		if rerr == nil {
			rerr = w.ckpt.Release(ctx, c.id, c.token)
		}
	}
	if rerr != nil {
		// The ownership expires by itself within ownershipTTL.
		log.Warn("could not release the task's ownership", zap.Error(rerr))
	}
}

// retryLater stamps the index entry of a run of asynq that failed for now
// with the time of its failure. asynq records the retry right after the
// handler returns, and the loop passes over an entry younger than
// ownershipTTL, so a task that failed for now is not taken over before
// asynq shows it waiting for its retry. When asynq cannot record that
// retry — a Redis failover failed the run, and asynq's write of the retry
// fails too and is never tried again (asynq's syncer retries it with a
// context already cancelled) — the task stays active in asynq until its
// lease recovery, 60–120 s; indexed, it is taken over within seconds of
// Redis answering again. When the stamp cannot be written, the entry of
// the run's start stays, and serves the same way.
func (w *Worker) retryLater(ctx context.Context, c *claim) error {
	return indexTask.Run(ctx, w.rdb, []string{takeoverIndexKey}, c.id, c.queue).Err()
}

// takeoverLoop looks for tasks to take over until ctx is cancelled; the
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

// indexTask writes a task's entry in the takeover index: the Redis
// server's time in milliseconds, a space, and the task's queue. The time
// is the server's, so workers with skewed clocks agree on an entry's age.
//
// KEYS[1] takeover index; ARGV[1] task id, ARGV[2] queue
var indexTask = redis.NewScript(`
redis.replicate_commands() -- Redis < 5: TIME before a write needs it
local t = redis.call("TIME")
redis.call("HSET", KEYS[1], ARGV[1], string.format("%d %s", t[1] * 1000 + math.floor(t[2] / 1000), ARGV[2]))
return 1`)

// unindexIfUnchanged removes a task's takeover index entry if it still
// holds the value read.
//
// KEYS[1] takeover index; ARGV[1] task id, ARGV[2] the entry read
var unindexIfUnchanged = redis.NewScript(`
if redis.call("HGET", KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call("HDEL", KEYS[1], ARGV[1])
end
return 0`)

// readTakeoverIndex returns the takeover index's entries and its node's
// time in milliseconds, in one script on the index's node: entries are
// aged by the clock that stamped them (on a Cluster, TIME alone would go
// to any node).
//
// KEYS[1] takeover index
var readTakeoverIndex = redis.NewScript(`
local t = redis.call("TIME")
return {t[1] * 1000 + math.floor(t[2] / 1000), redis.call("HGETALL", KEYS[1])}`)

// readIndex runs readTakeoverIndex: entries by task id, and the time.
func readIndex(ctx context.Context, rdb redis.Scripter) (map[string]string, time.Time, error) {
	res, err := readTakeoverIndex.Run(ctx, rdb, []string{takeoverIndexKey}).Slice()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read ownership index: %w", err)
	}
	ms, _ := res[0].(int64)
	flat, _ := res[1].([]any)
	index := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		v, _ := flat[i+1].(string)
		index[k] = v
	}
	return index, time.UnixMilli(ms), nil
}

// parseIndexEntry reads an entry of the takeover index (see indexTask):
// the task's queue, and when its run indexed it (zero for an entry of an
// earlier version, which held the queue alone).
func parseIndexEntry(v string) (queue string, at time.Time) {
	ms, q, ok := strings.Cut(v, " ")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil {
		return v, time.Time{}
	}
	return q, time.UnixMilli(n)
}

// takeoverScan claims each indexed task of this worker's queues whose
// ownership expired while asynq still shows its task active (its worker
// died or hangs), and continues it in a new goroutine.
//
// An entry younger than ownershipTTL is passed over: its run indexes the
// task before it claims it (acquire), so between the two the task is
// indexed, active and owned by nobody while its worker is alive; taking it
// over then would run it twice, the live run waiting for the takeover. A
// run that died between the two is taken over once its entry is
// ownershipTTL old, as one that died holding its claim is.
func (w *Worker) takeoverScan(ctx, runCtx context.Context) error {
	index, now, err := readIndex(ctx, w.rdb)
	if err != nil {
		return err
	}
	for id, entry := range index {
		queue, at := parseIndexEntry(entry)
		if _, ok := w.cfg.Queues[queue]; !ok || ctx.Err() != nil || now.Sub(at) < ownershipTTL {
			continue
		}
		if owned, err := w.ckpt.Owned(ctx, id); err != nil || owned {
			continue
		}
		if _, done, err := w.ckpt.Done(ctx, id); err != nil || done {
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
		if err == nil && (ti.State == asynq.TaskStatePending || ti.State == asynq.TaskStateRetry || ti.State == asynq.TaskStateScheduled) {
			// asynq runs it again, and that run indexes it anew. Left
			// here (a run that failed for now, or stopped by a
			// shutdown, stays indexed: see release), the old entry
			// would make the next run look dead between its dequeue
			// and its claim, and keep a task waiting hours for its
			// retry in every scan. Removed only if unchanged: a run
			// that indexed it since keeps its entry.
			unindexIfUnchanged.Run(ctx, w.rdb, []string{takeoverIndexKey}, id, entry)
			continue
		}
		if err != nil || ti.State != asynq.TaskStateActive {
			continue
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
		_, done, _ := w.ckpt.Done(ctx, id)
		if !still || done {
			_ = w.ckpt.Release(ctx, id, token)
			w.takeovers.end(id, 0)
			continue
		}
		w.takeovers.wg.Add(1)
		go func() {
			defer w.takeovers.wg.Done()
			w.takeOver(runCtx, &claim{id: id, token: token, queue: queue, takeover: true}, ti)
		}()
	}
	return nil
}

// takeOver runs the task's handler for its id outside asynq, holding c.
func (w *Worker) takeOver(ctx context.Context, c *claim, ti *asynq.TaskInfo) {
	log := w.log.With(zap.String("task_id", c.id), zap.String("task_type", ti.Type), zap.String("queue", ti.Queue))
	log.Info("taking over a task whose worker stopped renewing its ownership", zap.Int64("token", c.token))
	err := w.handler.ProcessTask(withClaim(ctx, c), asynq.NewTask(ti.Type, ti.Payload))
	// A handler that failed before it claimed the task never released.
	_ = w.ckpt.Release(context.WithoutCancel(ctx), c.id, c.token)
	cooldown := time.Duration(0)
	switch {
	case err == nil:
		log.Info("takeover completed the task; asynq's own run of the task will find it done")
	case lostOwnership(ctx, err):
		log.Info("takeover lost the task to another worker", zap.Error(err))
	case errors.Is(err, asynq.SkipRetry):
		// The run published the reason (failedState) and left it in the
		// done mark: asynq's run of the task fails the same way from it.
		log.Info("takeover failed for good", zap.Error(err))
	default:
		cooldown = takeoverCooldown
		log.Warn("takeover stopped; the task stays resumable", zap.Error(err))
	}
	w.takeovers.end(c.id, cooldown)
}
