package worker_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// BenchmarkMigrate measures migration throughput (objects/s and MiB/s)
// through a real worker, Redis and versitygw: FERRY_BENCH_OBJECTS objects
// (default 2000, mostly ≤ 64 KiB, 1% above the part size), either
// server-side (same profile) or streamed between two endpoints.
//
//	make tools && FERRY_TEST_REAL=1 go test -run '^$' -bench Migrate -benchtime 1x -count 3 ./worker/
func BenchmarkMigrate(b *testing.B) {
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("FERRY_BENCH_OBJECTS")); err == nil && v > 0 {
		n = v
	}
	for _, mode := range []struct{ name, dstProfile string }{{"server-side", "default"}, {"streamed", "other"}} {
		b.Run(mode.name, func(b *testing.B) {
			bu := setup(b, func(c *worker.Config) { c.Concurrency = 8; c.Logger = nil })
			bu.start(b)
			src := bu.storage(b)
			fillSource(b, src, "src/", n, n/100)
			var objs, bytes float64
			var took time.Duration
			for b.Loop() {
				dst := bu.s3.Bucket(b)
				start := time.Now()
				id := bu.enq(b)(tasks.NewMigrateTask(tasks.MigratePayload{Source: s3loc("", bu.bucket, "src/"),
					Dest: s3loc(mode.dstProfile, dst, "dst/")}))
				if p := bu.wait(b, id, 30*time.Minute); p.State != tasks.StateCompleted {
					b.Fatalf("migration ended %+v", p)
				}
				took += time.Since(start)
				rep := migrateReport(b, bu, id)
				objs += float64(rep.Copied)
				bytes += float64(rep.Bytes)
			}
			b.ReportMetric(objs/took.Seconds(), "objects/s")
			b.ReportMetric(bytes/took.Seconds()/(1<<20), "MiB/s")
		})
	}
}
