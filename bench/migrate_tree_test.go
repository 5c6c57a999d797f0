package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// BenchmarkMigrateLocalTree: per round, a local tree of 2,000 files of
// 64 KiB in 20 directories migrated to S3 with one `ferry migrate` (the
// walk, the listing diff against an empty destination prefix, and the
// ferry:batch tasks the migration enqueues) vs PutObject of the same files
// from 16 goroutines, alternating which goes first. Both have at most 16
// uploads in flight (see inFlight). Target: ratio ≥ 0.9 (issue 12).
func BenchmarkMigrateLocalTree(b *testing.B) {
	e := newEnv(b)
	dir := filepath.Join(e.dir, "tree")
	paths := make([]string, batchCount)
	for i := range paths {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%20))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		paths[i] = writeRandomFile(b, sub, fmt.Sprintf("f-%04d.bin", i), batchSize)
	}
	e.startWorker(b, func(c *worker.Config) { inFlight(c, batchConc, true) })
	ferry := func(round string) {
		id := e.enq(b)(tasks.NewMigrateTask(tasks.MigratePayload{Source: tasks.Location{Path: dir},
			Dest: tasks.Location{Bucket: e.bucket, Key: "ferry/" + round + "/"}}))
		e.waitDone(b, id, 10*time.Minute)
	}
	direct := func(round string) { directPuts(b, e, paths, batchSize, batchConc, "direct/"+round+"/") }
	alternate(b, batchCount, "", ferry, direct)
}
