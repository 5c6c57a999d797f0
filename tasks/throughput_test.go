package tasks_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// TestThroughputSumsEveryWorker: eight writers adding to the same buckets
// at once (as many workers do) lose nothing, and Throughput reads each
// bucket's sum, the bucket in progress marked partial, with its rate over
// its elapsed part.
func TestThroughputSumsEveryWorker(t *testing.T) {
	t.Parallel()
	rdb := testenv.PrivateRedisClient(t)
	ctx := context.Background()
	// A bucket boundary plus 5 s: the bucket in progress is 5 s old.
	now := time.Now().Truncate(tasks.ThroughputBucket).Add(5 * time.Second)
	earlier := now.Add(-3 * tasks.ThroughputBucket)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 250 {
				for _, at := range []time.Time{earlier, now} {
					if err := tasks.RecordThroughput(ctx, rdb, 1000, at); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	// A progress update of a worker adds its bytes in the same pipeline.
	if err := tasks.PublishProgressMoved(ctx, rdb, tasks.Progress{TaskID: "tp-1", State: tasks.StateActive, UpdatedAt: earlier}, 0, 500); err != nil {
		t.Fatal(err)
	}
	points, err := tasks.Throughput(ctx, rdb, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := int(tasks.ThroughputWindow/tasks.ThroughputBucket) + 1; len(points) != want {
		t.Fatalf("%d points; want %d", len(points), want)
	}
	last, before := points[len(points)-1], points[len(points)-4]
	if !last.Partial || last.Bytes != 2_000_000 || last.Rate != 2_000_000/5.0 {
		t.Errorf("bucket in progress: %+v; want partial, 2,000,000 bytes at 400,000 B/s (over its 5 s)", last)
	}
	if before.Partial || !before.Start.Equal(earlier.Truncate(tasks.ThroughputBucket)) || before.Bytes != 2_000_500 || before.Rate != 2_000_500/tasks.ThroughputBucket.Seconds() {
		t.Errorf("bucket of %s: %+v; want 2,000,500 bytes over the whole bucket", earlier, before)
	}
	var total int64
	for i, p := range points {
		total += p.Bytes
		if i > 0 && p.Start.Sub(points[i-1].Start) != tasks.ThroughputBucket {
			t.Errorf("point %d starts %s after the previous one", i, p.Start.Sub(points[i-1].Start))
		}
	}
	if total != 4_000_500 {
		t.Errorf("window total %d; want 4,000,500", total)
	}
}

// TestThroughputMemoryIsBounded: a fleet writing every second for two
// hours leaves only the buckets of the window (plus the bucket in progress
// and slack) in Redis, each expiring on its own, and nothing older is read.
func TestThroughputMemoryIsBounded(t *testing.T) {
	t.Parallel()
	rdb := testenv.PrivateRedisClient(t)
	ctx := context.Background()
	now := time.Now()
	start := now.Add(-2 * time.Hour)
	for at := start; !at.After(now); at = at.Add(time.Second) {
		if err := tasks.RecordThroughput(ctx, rdb, 1, at); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := rdb.Keys(ctx, "ferry:throughput:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	bound := int(tasks.ThroughputWindow/tasks.ThroughputBucket) + 3
	if len(keys) > bound || len(keys) < bound-3 {
		t.Errorf("%d throughput keys after two hours of writes; want the window's, at most %d", len(keys), bound)
	}
	for _, k := range keys {
		if ttl, err := rdb.TTL(ctx, k).Result(); err != nil || ttl <= 0 || ttl > tasks.ThroughputWindow+3*tasks.ThroughputBucket {
			t.Errorf("%s expires in %s (%v); want within the window", k, ttl, err)
		}
	}
	var used int64
	for _, k := range keys {
		n, err := rdb.MemoryUsage(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		used += n
	}
	t.Logf("%d keys, %d bytes (MEMORY USAGE) after two hours of writes", len(keys), used)
	if used > 16<<10 {
		t.Errorf("the throughput keys use %d bytes; want a few KiB", used)
	}
	points, err := tasks.Throughput(ctx, rdb, now)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, p := range points {
		total += p.Bytes
	}
	// One byte a second over the window, the bucket in progress included.
	first := points[0].Start
	if want := int64(now.Sub(first)/time.Second) + 1; total < want-1 || total > want+1 {
		t.Errorf("window total %d; want about %d (one per second since %s)", total, want, first)
	}
}
