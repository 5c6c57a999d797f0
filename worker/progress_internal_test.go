package worker

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// TestFinalProgressWaitsForRedis: a run that ends while its Redis is away
// (a master failing over) publishes its final state once Redis answers
// again, before its handler returns. Lost, the task's progress said
// "active" for good while asynq recorded the task completed, and a
// watcher never saw it end (TestFailover's Cluster case, 1 run in 3).
func TestFinalProgressWaitsForRedis(t *testing.T) {
	t.Parallel()
	srv, w := killableRedisWorker(t)
	ctx := context.Background()
	id := testenv.UniqueName("final")
	pr := w.newProgress(ctx, id, tasks.TypeUpload, "/src", "s3://b/k")

	srv.Kill()
	const away = 7 * time.Second
	took, h := finishWhileAway(t, srv, pr, away)
	if p, err := tasks.ParseProgress(id, h); err != nil || p.State != tasks.StateCompleted {
		t.Fatalf("progress once finish returned (after %s, Redis away for %s): %+v (%v), want %s", took, away, h, err, tasks.StateCompleted)
	}
	if took > away+10*time.Second {
		t.Errorf("finish took %s for a Redis away %s", took, away)
	}
}

// TestFinalProgressYieldsToANewOwner: a run whose final state Redis did not
// take stops retrying it once another run owns the task (a takeover of a
// run whose retry asynq could not record): that run's progress is not
// overwritten by this one's late end.
func TestFinalProgressYieldsToANewOwner(t *testing.T) {
	t.Parallel()
	srv, w := killableRedisWorker(t)
	rdb, store := w.rdb, w.ckpt
	ctx := context.Background()
	id := testenv.UniqueName("yield")
	pr := w.newProgress(ctx, id, tasks.TypeUpload, "/src", "s3://b/k")
	// The newer run's claim, as a takeover's (the data dir keeps it
	// across the restart).
	if _, err := store.Claim(ctx, id, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	// Longer than the first publish's own timeout (5 s), so that the
	// retries are what meets Redis again.
	took, h := finishWhileAway(t, srv, pr, 7*time.Second)
	if owned, err := store.Owned(ctx, id); !owned || err != nil {
		t.Fatalf("the newer run's claim did not survive the restart (%v): the test proves nothing", err)
	}
	if h["state"] == string(tasks.StateCompleted) {
		t.Errorf("this run published completed over the newer owner's progress: %v", h)
	}
	if took > 20*time.Second {
		t.Errorf("finish took %s: it kept retrying though another run owned the task", took)
	}
}

// killableRedisWorker starts a redis-server of t's own, to kill and
// restart, and a Worker with just what publishing progress needs on it.
func killableRedisWorker(t *testing.T) (*testenv.RedisProcess, *Worker) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if testenv.RealRequired() {
			t.Fatalf("redis-server is not installed and %s=1 forbids skipping: %v", testenv.EnvReal, err)
		}
		t.Skip("needs a redis-server of its own, to kill and restart: ", err)
	}
	srv, err := testenv.StartRedisProcess("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return srv, &Worker{log: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), rdb: rdb, cfg: Config{ProgressTTL: time.Hour},
		ckpt: checkpoint.New(rdb, checkpoint.Options{})}
}

// finishWhileAway runs pr.finish while srv, killed by the caller, is
// restarted after away; it returns how long finish took and the task's
// progress hash once Redis is back.
func finishWhileAway(t *testing.T, srv *testenv.RedisProcess, pr *progress, away time.Duration) (time.Duration, map[string]string) {
	t.Helper()
	back := make(chan error, 1)
	go func() {
		time.Sleep(away)
		back <- srv.Start()
	}()
	start := time.Now()
	pr.finish(context.Background())
	took := time.Since(start)
	if err := <-back; err != nil {
		t.Fatalf("restart redis: %v", err)
	}
	h, err := pr.w.rdb.HGetAll(context.Background(), tasks.ProgressKey(pr.p.TaskID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return took, h
}
