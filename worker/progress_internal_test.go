package worker

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

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
	w := &Worker{log: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), rdb: rdb, cfg: Config{ProgressTTL: time.Hour}}
	ctx := context.Background()
	id := testenv.UniqueName("final")
	pr := w.newProgress(ctx, id, tasks.TypeUpload, "/src", "s3://b/k")

	srv.Kill()
	const away = 7 * time.Second
	back := make(chan error, 1)
	go func() {
		time.Sleep(away)
		back <- srv.Start()
	}()
	start := time.Now()
	pr.finish(ctx)
	took := time.Since(start)
	if err := <-back; err != nil {
		t.Fatalf("restart redis: %v", err)
	}
	h, err := rdb.HGetAll(ctx, tasks.ProgressKey(id)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if p, err := tasks.ParseProgress(id, h); err != nil || p.State != tasks.StateCompleted {
		t.Fatalf("progress once finish returned (after %s, Redis away for %s): %+v (%v), want %s", took, away, h, err, tasks.StateCompleted)
	}
	if took > away+10*time.Second {
		t.Errorf("finish took %s for a Redis away %s", took, away)
	}
}
