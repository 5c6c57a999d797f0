package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/internal/workerproc"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

func TestMain(m *testing.M) {
	if workerproc.IsChild() {
		os.Exit(workerproc.ChildMain())
	}
	os.Exit(testenv.Run(m))
}

const mib = 1 << 20

// benchSize is the large-upload size: $FERRY_BENCH_SIZE bytes (suffixes
// k, m, g allowed), default 1 GiB.
func benchSize(tb testing.TB) int64 {
	s := os.Getenv("FERRY_BENCH_SIZE")
	if s == "" {
		return 1 << 30
	}
	mult := int64(1)
	switch s[len(s)-1] {
	case 'k', 'K':
		mult, s = 1<<10, s[:len(s)-1]
	case 'm', 'M':
		mult, s = 1<<20, s[:len(s)-1]
	case 'g', 'G':
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		tb.Fatalf("FERRY_BENCH_SIZE=%q: want a positive byte count like 1073741824 or 1g", os.Getenv("FERRY_BENCH_SIZE"))
	}
	return n * mult
}

// env is what a benchmark needs: real Redis, real S3, a bucket, an allowed
// directory, a queue of its own and a producer client.
type env struct {
	s3     *testenv.S3Server
	rdb    *redis.Client
	bucket string
	dir    string
	queue  string
	client *tasks.Client
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	e := &env{s3: testenv.S3(tb), rdb: testenv.RedisClient(tb), dir: tb.TempDir(), queue: testenv.UniqueName("bench")}
	e.bucket = e.s3.Bucket(tb)
	e.client = tasks.NewClient(e.rdb)
	return e
}

// profiles is the benchmarks' "default" profile: the server as its own
// provider says (versitygw: x-amz-checksum-crc32c on every write, as on
// AWS), which is what a user of versitygw configures.
func (e *env) profiles() map[string]storage.Config {
	return map[string]storage.Config{"default": versity(e.s3)}
}

// versity is srv's profile with the versitygw provider.
func versity(srv *testenv.S3Server) storage.Config {
	p := srv.Profile()
	p.Provider = storage.ProviderVersity
	return p
}

// startWorker runs an in-process worker on e's queue until the benchmark ends.
func (e *env) startWorker(tb testing.TB, mutate func(*worker.Config)) {
	tb.Helper()
	cfg := worker.Config{Redis: e.rdb, Profiles: e.profiles(), Queues: map[string]int{e.queue: 1},
		AllowDirs: []string{e.dir}, JanitorInterval: -1, ShutdownTimeout: 5 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	if f := os.Getenv("FERRY_BENCH_LOG"); f != "" {
		// Every task's start and end (and a batch's record writes) with
		// nanosecond times: where a run's time goes.
		zc := zap.NewProductionConfig()
		zc.Level = zap.NewAtomicLevelAt(zap.DebugLevel)
		zc.OutputPaths = []string{f}
		zc.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		zc.Sampling = nil // every event: a timeline with gaps misleads
		l, err := zc.Build()
		if err != nil {
			tb.Fatalf("FERRY_BENCH_LOG: %v", err)
		}
		cfg.Logger = l
	}
	workerproc.Start(tb, cfg)
}

// childConfig is a worker process on e's queue.
func (e *env) childConfig(tb testing.TB) workerproc.ChildConfig {
	return workerproc.ChildConfig{Redis: testenv.Redis(tb).Addr, Profiles: e.profiles(), Queue: e.queue, Dir: e.dir,
		Shutdown: 5 * time.Second}
}

// writeRandomFile writes size random bytes to dir/name without holding
// them in memory.
func writeRandomFile(tb testing.TB, dir, name string, size int64) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return p
}

// enq returns a func enqueueing a (task, error) pair from a
// tasks.NewXxxTask constructor on e's queue: e.enq(tb)(tasks.NewPutTask(p)).
func (e *env) enq(tb testing.TB) func(*asynq.Task, error) string {
	return func(t *asynq.Task, err error) string { return e.enqueue(tb, t, err) }
}

// enqueue enqueues a task on e's queue and returns its id.
func (e *env) enqueue(tb testing.TB, t *asynq.Task, err error) string {
	tb.Helper()
	return testenv.Enqueue(tb, e.client, e.queue, t, err)
}

// waitDone waits until the task is completed; an archived task fails tb.
//
// It does not poll the task's state while the task runs: a poll every
// 5 ms cost the ferry side of a benchmark about a tenth of its CPU (the
// Inspector's script in Redis and its client here), work the direct path
// it is compared with never does, on a machine whose two cores the server
// needs. It watches the task's progress (tasks.Client.Watch) until the run
// publishes its end, then reads asynq's state, which follows just after,
// every 2 ms at first and backing off to every 100 ms.
func (e *env) waitDone(tb testing.TB, id string, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	updates, err := e.client.Watch(ctx, id)
	if err != nil {
		tb.Fatal(err)
	}
	for range updates {
		// closed at the task's terminal state, or at the timeout
	}
	for poll := 2 * time.Millisecond; ; poll = min(2*poll, 100*time.Millisecond) {
		ti, err := e.client.Inspector().GetTaskInfo(e.queue, id)
		if err == nil {
			switch ti.State {
			case asynq.TaskStateCompleted:
				return
			case asynq.TaskStateArchived:
				tb.Fatalf("task %s archived: %s", id, ti.LastErr)
			}
		} else if !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
			tb.Fatal(err)
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("task %s not completed within %s", id, timeout)
		case <-time.After(poll):
		}
	}
}

// completions subscribes to the progress channel and returns a func that
// waits until n tasks of e's run have published "completed" (failing tb on
// "failed"). Subscribe before enqueueing.
func (e *env) completions(tb testing.TB) func(n int) {
	tb.Helper()
	ctx := context.Background()
	sub := e.rdb.Subscribe(ctx, tasks.ProgressChannel)
	if _, err := sub.Receive(ctx); err != nil {
		tb.Fatal(err)
	}
	return func(n int) {
		defer sub.Close()
		ch := sub.Channel()
		seen := map[string]bool{}
		timeout := time.After(10 * time.Minute)
		for len(seen) < n {
			select {
			case m := <-ch:
				var p tasks.Progress
				if err := json.Unmarshal([]byte(m.Payload), &p); err != nil {
					tb.Fatal(err)
				}
				switch p.State {
				case tasks.StateCompleted:
					seen[p.TaskID] = true
				case tasks.StateFailed:
					tb.Fatalf("task %s failed: %s", p.TaskID, p.Error)
				}
			case <-timeout:
				tb.Fatalf("only %d of %d tasks completed in 10 minutes", len(seen), n)
			}
		}
	}
}

// startHook is a zap core that records when the worker's "task started"
// log line was written for each task id: the moment the handler chain
// starts, used to measure pickup latency through the real worker.
type startHook struct {
	mu      sync.Mutex
	waiting map[string]chan time.Time
}

func newStartHook() *startHook { return &startHook{waiting: map[string]chan time.Time{}} }

// expect returns a channel that receives the start time of task id.
func (h *startHook) expect(id string) chan time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.waiting[id]
	if !ok {
		ch = make(chan time.Time, 1)
		h.waiting[id] = ch
	}
	return ch
}

func (h *startHook) logger() *zap.Logger { return zap.New(&hookCore{h: h}) }

type hookCore struct {
	h      *startHook
	fields []zapcore.Field
}

func (c *hookCore) Enabled(zapcore.Level) bool { return true }
func (c *hookCore) With(f []zapcore.Field) zapcore.Core {
	return &hookCore{h: c.h, fields: append(append([]zapcore.Field(nil), c.fields...), f...)}
}
func (c *hookCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Message == "task started" {
		return ce.AddCore(e, c)
	}
	return ce
}
func (c *hookCore) Write(e zapcore.Entry, f []zapcore.Field) error {
	for _, fl := range append(c.fields, f...) {
		if fl.Key == "task_id" {
			c.h.expect(fl.String) <- e.Time
		}
	}
	return nil
}
func (c *hookCore) Sync() error { return nil }

// inFlight sets c up for a comparison with a direct program of n
// goroutines, "the same total concurrency": at most n requests in flight
// to each server, as the direct program's n goroutines make. Every
// profile's connection pool is capped at n (max_pool_connections: n, a hard
// cap per endpoint), and the worker gets the task slots to keep them busy:
// n/2 slots of 4 items each (twice n item runners, so that a slot held by a
// large object's copy, which sends one request, or a batch's last items
// leaves no connection idle), plus one for a migration task when migration
// is true. Requests beyond the cap wait for a connection.
func inFlight(c *worker.Config, n int, migration bool) {
	c.Concurrency, c.BatchConcurrency = n/2, 4
	if migration {
		c.Concurrency++
	}
	for name, p := range c.Profiles {
		p.MaxPoolConnections = n
		c.Profiles[name] = p
	}
}
