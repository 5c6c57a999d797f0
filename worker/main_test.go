package worker_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

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

// bundle is what a worker test needs: real Redis, real S3, a running worker
// on a queue of its own, and a producer client.
type bundle struct {
	rdb    *redis.Client
	s3     *testenv.S3Server
	bucket string
	dir    string // the worker's allowed directory
	queue  string
	client *tasks.Client
	cfg    worker.Config
}

// profilesFor returns two profiles on the S3 server: "default", and "other"
// that reaches it by another host name, so copies between them take the
// cross-endpoint (streamed, checkpointed) path; and "alias", a second name
// for "default".
func profilesFor(srv *testenv.S3Server) map[string]storage.Config {
	p := srv.Profile()
	other := p
	other.EndpointURL = replaceHost(srv.Endpoint, "127.0.0.1", "localhost")
	// "alias" is "default" under another name: the same objects.
	return map[string]storage.Config{"default": p, "other": other, "alias": p}
}

func setup(t testing.TB, mutate func(*worker.Config)) *bundle {
	t.Helper()
	b := &bundle{rdb: testenv.RedisClient(t), s3: testenv.S3(t), dir: t.TempDir(), queue: testenv.UniqueName("q")}
	b.bucket = b.s3.Bucket(t)
	b.client = tasks.NewClient(b.rdb)
	b.cfg = worker.Config{
		Redis: b.rdb, Profiles: profilesFor(b.s3), Concurrency: 4, Queues: map[string]int{b.queue: 1},
		AllowDirs: []string{b.dir}, PartSize: storage.MinPartSize, PartConcurrency: 3,
		JanitorInterval: -1, ShutdownTimeout: 5 * time.Second,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
	}
	if mutate != nil {
		mutate(&b.cfg)
	}
	return b
}

// start runs the worker until the test ends.
func (b *bundle) start(t testing.TB) *worker.Worker {
	t.Helper()
	return workerproc.Start(t, b.cfg)
}

// enq returns a func enqueueing a (task, error) pair from a tasks.NewXxxTask
// constructor on the bundle's queue: b.enq(t)(tasks.NewPutTask(p)).
func (b *bundle) enq(t testing.TB) func(*asynq.Task, error) string {
	return func(task *asynq.Task, err error) string { return b.enqueue(t, task, err) }
}

// enqueue enqueues t on the bundle's queue and returns its id.
func (b *bundle) enqueue(t testing.TB, task *asynq.Task, err error, opts ...asynq.Option) string {
	t.Helper()
	return testenv.Enqueue(t, b.client, b.queue, task, err, opts...)
}

// wait watches the task until it ends and returns its last progress.
func (b *bundle) wait(t testing.TB, id string, timeout time.Duration) tasks.Progress {
	t.Helper()
	return testenv.WaitTask(t, b.client, id, timeout)
}

// info returns asynq's record of the task.
func (b *bundle) info(t testing.TB, id string) *asynq.TaskInfo {
	t.Helper()
	ti, err := b.client.Inspector().GetTaskInfo(b.queue, id)
	if err != nil {
		t.Fatalf("GetTaskInfo(%s): %v", id, err)
	}
	return ti
}

// storageOn opens another bucket on the "default" profile.
func (b *bundle) storageOn(t testing.TB, bucket string) *storage.S3 {
	t.Helper()
	cfg := profilesFor(b.s3)["default"]
	cfg.Bucket = bucket
	s, err := storage.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// storage opens the test bucket directly (to check results independently).
func (b *bundle) storage(t testing.TB) *storage.S3 {
	t.Helper()
	return b.storageOn(t, b.bucket)
}
