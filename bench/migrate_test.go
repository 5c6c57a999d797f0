package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// The migration benchmark's workload (issue 12): 2,000 objects of 1 KiB to
// 128 KiB plus four of 32 MiB, bucket to bucket on one endpoint.
const (
	migSmall    = 2000
	migLarge    = 4
	migLargeLen = 32 * mib
	migConc     = 16
)

// fillMigrationSource writes the workload to bucket from migConc
// goroutines; the large objects with one PutObject each.
func (e *env) fillMigrationSource(tb testing.TB, bucket string) int64 {
	return putObjects(tb, e.s3.Client(), bucket, migSmall+migLarge, migConc, func(i int) (string, int) {
		if i >= migSmall {
			return fmt.Sprintf("large/%d", i-migSmall), migLargeLen
		}
		return fmt.Sprintf("small/%02d/%04d", i%20, i), 1<<10 + mrand.IntN(127<<10+1)
	})
}

// putObjects writes n objects of random bytes to bucket from conc
// goroutines, object i at the key and of the size object(i) says, and
// returns the bytes written.
func putObjects(tb testing.TB, sc *s3.Client, bucket string, n, conc int, object func(i int) (key string, size int)) int64 {
	ctx := context.Background()
	var total atomic.Int64
	var wg sync.WaitGroup
	next := make(chan int)
	for range conc {
		wg.Go(func() {
			for i := range next {
				key, size := object(i)
				data := make([]byte, size)
				_, _ = rand.Read(data)
				if _, err := sc.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(data),
					ContentLength: aws.Int64(int64(size)), ContentType: aws.String("application/octet-stream")}); err != nil {
					tb.Error(err)
					return
				}
				total.Add(int64(size))
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if tb.Failed() {
		tb.FailNow()
	}
	return total.Load()
}

// directMigrate is the direct SDK path on one endpoint: ListObjectsV2
// pages of the source, each object CopyObject'ed (server-side) to dst from
// migConc goroutines.
func (e *env) directMigrate(tb testing.TB, src, dst string) {
	sc := e.s3.Client()
	forEachListed(tb, sc, src, migConc, func(ctx context.Context, key string) error {
		_, err := sc.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &dst, Key: aws.String(key),
			CopySource: aws.String(src + "/" + key)})
		return err
	})
}

// forEachListed lists bucket with ListObjectsV2 and calls do for each key
// from conc goroutines while the listing goes on; an error fails tb.
func forEachListed(tb testing.TB, sc *s3.Client, bucket string, conc int, do func(ctx context.Context, key string) error) {
	ctx := context.Background()
	var wg sync.WaitGroup
	next := make(chan string, 1000)
	for range conc {
		wg.Go(func() {
			for key := range next {
				if err := do(ctx, key); err != nil {
					tb.Error(err)
				}
			}
		})
	}
	p := s3.NewListObjectsV2Paginator(sc, &s3.ListObjectsV2Input{Bucket: &bucket})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			close(next)
			wg.Wait()
			tb.Fatal(err)
		}
		for _, o := range out.Contents {
			next <- aws.ToString(o.Key)
		}
	}
	close(next)
	wg.Wait()
}

// listBoth lists both buckets to their ends, one after the other: what a
// re-run of a finished migration cannot do without.
func (e *env) listBoth(tb testing.TB, buckets ...string) {
	sc := e.s3.Client()
	for _, b := range buckets {
		p := s3.NewListObjectsV2Paginator(sc, &s3.ListObjectsV2Input{Bucket: aws.String(b)})
		for p.HasMorePages() {
			if _, err := p.NextPage(context.Background()); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// migrate runs one ferry:migrate task src → dst on e's queue to its end
// and returns how long it took and its report.
func (e *env) migrate(tb testing.TB, src, dst tasks.Location, timeout time.Duration) (time.Duration, worker.MigrateReport) {
	tb.Helper()
	start := time.Now()
	id := e.enq(tb)(tasks.NewMigrateTask(tasks.MigratePayload{Source: src, Dest: dst}))
	e.waitDone(tb, id, timeout)
	took := time.Since(start)
	ti, err := e.client.Inspector().GetTaskInfo(e.queue, id)
	if err != nil {
		tb.Fatal(err)
	}
	var rep worker.MigrateReport
	if err := json.Unmarshal(ti.Result, &rep); err != nil {
		tb.Fatal(err)
	}
	return took, rep
}

// rerunFigures are what a re-run of a finished migration cost: its time,
// the HEADs and writes (PUT, POST, DELETE) it sent, and the time of
// listing both buckets after it.
type rerunFigures struct {
	took, list    time.Duration
	heads, writes int
}

func (f *rerunFigures) add(g rerunFigures) {
	f.took += g.took
	f.list += g.list
	f.heads += g.heads
	f.writes += g.writes
}

// report reports the figures of rounds re-runs: rerun-HEADs and
// rerun-writes (target 0), rerun-ms, list-both-ms and rerun/list (target
// ≤ 2), each per re-run.
func (f rerunFigures) report(b *testing.B, rounds int) {
	n := float64(rounds)
	b.ReportMetric(float64(f.heads)/n, "rerun-HEADs")
	b.ReportMetric(float64(f.writes)/n, "rerun-writes")
	b.ReportMetric(f.took.Seconds()/n*1000, "rerun-ms")
	b.ReportMetric(f.list.Seconds()/n*1000, "list-both-ms")
	b.ReportMetric(float64(f.took)/float64(f.list), "rerun/list")
}

// rerun runs the finished migration of objects objects from src to dst
// (buckets of e's server, reached through counter's proxy as profile
// "counted") again, fails tb unless it skipped every object, and then
// lists both buckets.
func (e *env) rerun(tb testing.TB, counter *testenv.CountingProxy, src, dst string, objects int) rerunFigures {
	tb.Helper()
	counter.Take()
	took, rep := e.migrate(tb, tasks.Location{Profile: "counted", Bucket: src}, tasks.Location{Profile: "counted", Bucket: dst},
		10*time.Minute+time.Duration(objects)*10*time.Millisecond)
	if rep.Skipped != int64(objects) || rep.Copied != 0 || rep.Failed != 0 {
		tb.Fatalf("re-run: %+v; want %d skipped", rep, objects)
	}
	f := rerunFigures{took: took}
	by, _ := counter.Take()
	f.heads = by[http.MethodHead]
	for _, m := range []string{http.MethodPut, http.MethodPost, http.MethodDelete} {
		f.writes += by[m]
	}
	start := time.Now()
	e.listBoth(tb, src, dst)
	f.list = time.Since(start)
	return f
}

// samplePeak calls measure every interval until the returned func is
// called, which stops it and returns the highest value measured.
func samplePeak(interval time.Duration, measure func() int64) (stop func() int64) {
	var peak atomic.Int64
	done, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if m := measure(); m > peak.Load() {
				peak.Store(m)
			}
			select {
			case <-done:
				return
			case <-time.After(interval):
			}
		}
	}()
	return func() int64 {
		close(done)
		<-sampled
		return peak.Load()
	}
}

// eitherFirst runs ferry and direct, ferry first in even rounds and direct
// first in odd ones, so neither always meets a warmer (or busier) server:
// alternate's order, for a benchmark that does more per round.
func eitherFirst(round int, ferry, direct func()) {
	if round%2 == 0 {
		ferry()
		direct()
	} else {
		direct()
		ferry()
	}
}

// BenchmarkMigrate (issue 12): the workload above migrated bucket to
// bucket on one endpoint by ferry migrate (batches of small objects, a
// copy task per large one; at most 16 requests in flight, as the direct
// path: see inFlight) and by ListObjectsV2 + CopyObject from
// 16 goroutines, alternating which goes first; target ratio ≥ 1.0. Both
// reach the server directly. Then a re-run of the finished migration,
// through a proxy counting requests: its HEADs and writes (target 0), and
// its time over that of listing both buckets (target ≤ 2). Redis
// used_memory before, at its peak during and after each ferry migration is
// reported too (sampled every 20 ms).
func BenchmarkMigrate(b *testing.B) {
	e := newEnv(b)
	counter := e.startCountingWorker(b, func(c *worker.Config) { inFlight(c, migConc, true) })
	src := e.s3.Bucket(b)
	total := e.fillMigrationSource(b, src)
	const objects = migSmall + migLarge

	var dFerry, dDirect time.Duration
	var cFerry, cDirect cpuMeter
	var peakDelta, afterDelta int64
	var rerun rerunFigures
	warmUp(func() {
		if _, rep := e.migrate(b, tasks.Location{Bucket: src}, tasks.Location{Bucket: e.s3.Bucket(b)}, 10*time.Minute); rep.Copied != objects {
			b.Fatalf("warm-up migration: %+v", rep)
		}
	}, func() { e.directMigrate(b, src, e.s3.Bucket(b)) })
	b.ResetTimer()
	for i := range b.N {
		dst, direct := e.s3.Bucket(b), e.s3.Bucket(b)
		ferry := func() {
			before := usedMemory(b, e.rdb)
			stop := samplePeak(20*time.Millisecond, func() int64 { return usedMemory(b, e.rdb) })
			// Timed on the worker's direct profile, as the direct path
			// reaches the server: the counting proxy is for the re-run.
			var took time.Duration
			var rep worker.MigrateReport
			cFerry.measure(func() {
				took, rep = e.migrate(b, tasks.Location{Bucket: src}, tasks.Location{Bucket: dst}, 10*time.Minute)
			})
			peak := stop()
			if rep.Copied != objects || rep.Failed != 0 {
				b.Fatalf("migration: %+v", rep)
			}
			dFerry += took
			peakDelta = max(peakDelta, peak-before)
			afterDelta = max(afterDelta, usedMemory(b, e.rdb)-before)
		}
		eitherFirst(i, ferry, func() {
			// Sampled as ferry's run is, so that both pay for it in
			// time and CPU; the figure is not kept.
			stop := samplePeak(20*time.Millisecond, func() int64 { return usedMemory(b, e.rdb) })
			start := time.Now()
			cDirect.measure(func() { e.directMigrate(b, src, direct) })
			dDirect += time.Since(start)
			stop()
		})
		// Re-run the finished migration; then list both sides.
		rerun.add(e.rerun(b, counter, src, dst, objects))
	}
	ops := func(d time.Duration) float64 { return objects * float64(b.N) / d.Seconds() }
	b.ReportMetric(ops(dFerry), "ferry-obj/s")
	b.ReportMetric(ops(dDirect), "direct-obj/s")
	b.ReportMetric(ops(dFerry)/ops(dDirect), "ratio")
	reportCPU(b, objects*b.N, cFerry, cDirect)
	b.ReportMetric(float64(total)/(1<<20)*float64(b.N)/dFerry.Seconds(), "ferry-MiB/s")
	rerun.report(b, b.N)
	b.ReportMetric(float64(peakDelta)/(1<<10), "redis-peak-KiB")
	b.ReportMetric(float64(afterDelta)/(1<<10), "redis-after-KiB")
	b.ReportMetric(0, "ns/op")
}

// startCountingWorker starts e's worker (mutated by mutate) with one more
// profile, "counted": e's S3 server reached through a proxy counting its
// requests by method, returned.
func (e *env) startCountingWorker(tb testing.TB, mutate func(*worker.Config)) *testenv.CountingProxy {
	proxy := testenv.NewCountingProxy(tb, e.s3.Endpoint, nil)
	e.startWorker(tb, func(c *worker.Config) {
		mutate(c)
		counted := versity(e.s3)
		counted.EndpointURL = proxy.URL
		c.Profiles["counted"] = counted
	})
	return proxy
}

// redisMemory is testenv.RedisMemory; an error fails tb and measures 0.
func redisMemory(tb testing.TB, rdb *redis.Client) (used, clients int64) {
	used, clients, err := testenv.RedisMemory(context.Background(), rdb)
	if err != nil {
		tb.Error(err)
	}
	return used, clients
}

// usedMemory is INFO memory's used_memory, whole.
func usedMemory(tb testing.TB, rdb *redis.Client) int64 {
	used, _ := redisMemory(tb, rdb)
	return used
}
