package bench

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// benchObjects is the number of objects of BenchmarkMigrateMany:
// $FERRY_BENCH_OBJECTS, default 10,000 (issue 12's re-run figure);
// 100000 is its Redis figure, opt-in because seeding and migrating that
// many objects takes many minutes on 2 cores.
func benchObjects(tb testing.TB) int {
	s := os.Getenv("FERRY_BENCH_OBJECTS")
	if s == "" {
		return 10000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		tb.Fatalf("FERRY_BENCH_OBJECTS=%q: want a positive number of objects like 100000", s)
	}
	return n
}

// manyConc is how many goroutines seed BenchmarkMigrateMany's objects: a
// PutObject of a few bytes waits on versitygw's fsync and rename, not on
// the CPU, so many at once fill the source several times faster than 16.
const manyConc = 64

// BenchmarkMigrateMany (issue 12) migrates $FERRY_BENCH_OBJECTS small
// objects (default 10,000; 100,000 for the Redis target) bucket to bucket
// once, on a redis-server of its own, and reports Redis INFO used_memory
// less mem_clients_normal (the buffers of the worker's pooled connections,
// which grow with its concurrency, not with objects; as
// TestMigrateRedisIsFlat measures): before the migration, and its peak
// during it (sampled every 50 ms) and its value after it above before
// (targets ≤ 32 MiB and ≤ 1 MiB). Then, per round, it re-runs the finished
// migration through a proxy counting requests (targets: 0 HEADs, 0 writes)
// and lists both buckets (target: re-run ≤ 2× the listing). The worker is
// BenchmarkMigrate's: at most 16 requests in flight (inFlight).
//
// The body runs once (b.Loop): seeding and the first migration are not
// repeated for each -benchtime round.
func BenchmarkMigrateMany(b *testing.B) {
	n := benchObjects(b)
	e := newEnv(b)
	e.rdb = testenv.PrivateRedisClient(b)
	e.client = tasks.NewClient(e.rdb)
	counter := e.startCountingWorker(b, func(c *worker.Config) { inFlight(c, migConc, true) })
	src, dst := e.s3.Bucket(b), e.s3.Bucket(b)
	start := time.Now()
	putObjects(b, e.s3.Client(), src, n, manyConc, func(i int) (string, int) {
		return fmt.Sprintf("many/%03d/%06d", i%100, i), 16
	})
	seeded := time.Since(start)

	// Let the worker register itself (servers, workers, queues) first.
	time.Sleep(time.Second)
	memory := func() int64 {
		used, clients := redisMemory(b, e.rdb)
		return used - clients
	}
	before := memory()
	stop := samplePeak(50*time.Millisecond, memory)
	took, rep := e.migrate(b, tasks.Location{Bucket: src}, tasks.Location{Bucket: dst},
		10*time.Minute+time.Duration(n)*20*time.Millisecond)
	peak := stop()
	after := memory()
	if rep.Copied != int64(n) || rep.Failed != 0 {
		b.Fatalf("migration of %d objects: %+v", n, rep)
	}
	b.Logf("%d objects: seeded in %s, migrated in %s (%.0f/s); Redis used_memory less clients' %d bytes before, +%d at peak, +%d after",
		n, seeded.Round(time.Millisecond), took.Round(time.Millisecond), float64(n)/took.Seconds(), before, peak-before, after-before)

	var rerun rerunFigures
	rounds := 0
	for b.Loop() {
		rerun.add(e.rerun(b, counter, src, dst, n))
		rounds++
	}
	b.ReportMetric(float64(n), "objects")
	b.ReportMetric(seeded.Seconds(), "seed-s")
	b.ReportMetric(took.Seconds(), "migrate-s")
	b.ReportMetric(float64(before)/(1<<10), "redis-before-KiB")
	b.ReportMetric(float64(peak-before)/(1<<10), "redis-peak-KiB")
	b.ReportMetric(float64(after-before)/(1<<10), "redis-after-KiB")
	rerun.report(b, rounds)
	b.ReportMetric(0, "ns/op")
}
