package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// The large-upload comparison uses the design's direct-SDK reference:
// 8 MiB parts, 5 in flight, for both paths.
const (
	largePartSize = 8 * mib
	largePartConc = 5
)

// BenchmarkLargeUpload uploads one file (FERRY_BENCH_SIZE, default 1 GiB)
// per round through ferry (enqueue → in-process worker → versitygw) and
// with transfermanager.UploadObject (same part size and concurrency) to the
// same versitygw, alternating which goes first. Target: ratio ≥ 0.95.
func BenchmarkLargeUpload(b *testing.B) {
	e := newEnv(b)
	size := benchSize(b)
	path := writeRandomFile(b, e.dir, "large.bin", size)
	e.startWorker(b, func(c *worker.Config) {
		c.Concurrency = 1
		c.PartSize = largePartSize
		c.PartConcurrency = largePartConc
	})
	sc := e.s3.Client()
	tm := transfermanager.New(sc, func(o *transfermanager.Options) {
		o.PartSizeBytes = largePartSize
		o.Concurrency = largePartConc
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	})
	ctx := context.Background()
	ferry := func(key string) {
		id := e.enq(b)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path},
			Dest: tasks.Location{Bucket: e.bucket, Key: key}, PartSize: largePartSize, PartConcurrency: largePartConc, Size: size}))
		e.waitDone(b, id, 30*time.Minute)
	}
	direct := func(key string) {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if _, err := tm.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: &e.bucket, Key: &key, Body: f}); err != nil {
			b.Fatal(err)
		}
	}
	var dFerry, dDirect time.Duration
	timed := func(f func(string), key string) time.Duration {
		start := time.Now()
		f(key)
		d := time.Since(start)
		b.StopTimer()
		head, err := sc.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &e.bucket, Key: &key})
		if err != nil || aws.ToInt64(head.ContentLength) != size {
			b.Fatalf("%s: HEAD = %v, %v; want %d bytes", key, head, err, size)
		}
		_, _ = sc.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &e.bucket, Key: &key})
		b.StartTimer()
		return d
	}
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			dFerry += timed(ferry, fmt.Sprintf("ferry-%d", i))
			dDirect += timed(direct, fmt.Sprintf("direct-%d", i))
		} else {
			dDirect += timed(direct, fmt.Sprintf("direct-%d", i))
			dFerry += timed(ferry, fmt.Sprintf("ferry-%d", i))
		}
	}
	mibs := func(d time.Duration) float64 { return float64(size) * float64(b.N) / mib / d.Seconds() }
	b.ReportMetric(mibs(dFerry), "ferry-MiB/s")
	b.ReportMetric(mibs(dDirect), "direct-MiB/s")
	b.ReportMetric(mibs(dFerry)/mibs(dDirect), "ratio")
	b.ReportMetric(0, "ns/op")
}

// Small-object comparison: 2,000 × 64 KiB, 8 at a time on both paths.
const (
	smallCount = 2000
	smallSize  = 64 << 10
	smallConc  = 8
)

// BenchmarkSmallObjects puts 2,000 files of 64 KiB per round through the
// queue (put tasks, a worker with Concurrency 8) and with PutObject from 8
// goroutines, alternating. Target: ratio ≥ 0.8.
func BenchmarkSmallObjects(b *testing.B) {
	e := newEnv(b)
	paths := make([]string, smallCount)
	for i := range paths {
		paths[i] = writeRandomFile(b, e.dir, fmt.Sprintf("small-%04d", i), smallSize)
	}
	e.startWorker(b, func(c *worker.Config) { c.Concurrency = smallConc })
	sc := e.s3.Client()
	ctx := context.Background()
	ferry := func(round int) {
		// Count completions from the progress channel: polling asynq's
		// queue stats (a Lua script sampling MEMORY USAGE) every few ms
		// would load the same Redis the worker uses and skew the result.
		done := e.completions(b)
		var wg sync.WaitGroup
		next := make(chan int)
		for range 4 { // producers
			wg.Go(func() {
				for i := range next {
					e.enq(b)(tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Path: paths[i]},
						Dest: tasks.Location{Bucket: e.bucket, Key: fmt.Sprintf("ferry/%d/%04d", round, i)}}))
				}
			})
		}
		for i := range paths {
			next <- i
		}
		close(next)
		wg.Wait()
		done(smallCount)
	}
	direct := func(round int) {
		var wg sync.WaitGroup
		next := make(chan int)
		for range smallConc {
			wg.Go(func() {
				for i := range next {
					f, err := os.Open(paths[i])
					if err != nil {
						b.Error(err)
						return
					}
					key := fmt.Sprintf("direct/%d/%04d", round, i)
					_, err = sc.PutObject(ctx, &s3.PutObjectInput{Bucket: &e.bucket, Key: &key, Body: f, ContentLength: aws.Int64(smallSize)})
					f.Close()
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		for i := range paths {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	var dFerry, dDirect time.Duration
	timed := func(f func(int), round int) time.Duration {
		start := time.Now()
		f(round)
		return time.Since(start)
	}
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			dFerry += timed(ferry, i)
			dDirect += timed(direct, i)
		} else {
			dDirect += timed(direct, i)
			dFerry += timed(ferry, i)
		}
	}
	ops := func(d time.Duration) float64 { return float64(smallCount*b.N) / d.Seconds() }
	b.ReportMetric(ops(dFerry), "ferry-obj/s")
	b.ReportMetric(ops(dDirect), "direct-obj/s")
	b.ReportMetric(ops(dFerry)/ops(dDirect), "ratio")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkQueueOverhead measures enqueue latency (tasks.Client.Enqueue of
// a put task, one at a time, on a queue no worker serves) and idle pickup
// latency: from just before Enqueue to the worker's handler chain starting,
// with the worker idle and its TaskCheckInterval at the default (100 ms).
func BenchmarkQueueOverhead(b *testing.B) {
	e := newEnv(b)
	hook := newStartHook()
	e.startWorker(b, func(c *worker.Config) { c.Logger = hook.logger() })
	ctx := context.Background()
	idle := tasks.NewClient(e.rdb)
	var enq, pick []time.Duration
	b.ResetTimer()
	for range b.N {
		for i := range 1000 {
			t, err := tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte("x")},
				Dest: tasks.Location{Bucket: e.bucket, Key: fmt.Sprintf("enq/%d", i)}})
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if _, err := idle.Enqueue(ctx, t, asynqQueue(e.queue+"-idle")); err != nil {
				b.Fatal(err)
			}
			enq = append(enq, time.Since(start))
		}
		for i := range 40 {
			// Land anywhere in the worker's poll interval.
			time.Sleep(time.Duration(150+rand.IntN(100)) * time.Millisecond)
			t, err := tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte("x")},
				Dest: tasks.Location{Bucket: e.bucket, Key: fmt.Sprintf("pick/%d", i)}})
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			id := e.enqueue(b, t, nil)
			select {
			case at := <-hook.expect(id):
				pick = append(pick, at.Sub(start))
			case <-time.After(10 * time.Second):
				b.Fatalf("task %s not picked up within 10s", id)
			}
			e.waitDone(b, id, time.Minute)
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(pct(enq, 50)), "enqueue-p50-ms")
	b.ReportMetric(ms(pct(enq, 99)), "enqueue-p99-ms")
	b.ReportMetric(ms(pct(pick, 50)), "pickup-p50-ms")
	b.ReportMetric(ms(pct(pick, 95)), "pickup-p95-ms")
	b.ReportMetric(0, "ns/op")
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}

// BenchmarkWorkerMemory runs a worker process and reports its peak RSS
// (VmHWM) during one large upload and during 8 concurrent uploads, with the
// bound concurrency × part_concurrency × part_size + 64 MiB.
func BenchmarkWorkerMemory(b *testing.B) {
	size := benchSize(b)
	for _, tc := range []struct {
		name                string
		uploads, conc, pc   int
		partSize, fileBytes int64
	}{
		{"one-upload", 1, 4, 4, 16 * mib, size},
		{"8-concurrent", 8, 8, 4, 16 * mib, max(size/4, 64*mib)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b)
			path := writeRandomFile(b, e.dir, "mem.bin", tc.fileBytes)
			bin := ""
			if raceEnabled {
				bin = nonRaceBinary(b)
			}
			bound := int64(tc.conc)*int64(tc.pc)*tc.partSize + 64*mib
			var peak int64
			for i := range b.N {
				cc := e.childConfig(b)
				cc.Concurrency, cc.PartConcurrency, cc.PartSize = tc.conc, tc.pc, tc.partSize
				child := startChildT(b, bin, fmt.Sprintf("%s-%d", tc.name, i), cc)
				ids := make([]string, tc.uploads)
				for u := range ids {
					ids[u] = e.enq(b)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path},
						Dest: tasks.Location{Bucket: e.bucket, Key: fmt.Sprintf("mem/%d/%d", i, u)}, Size: tc.fileBytes}))
				}
				for _, id := range ids {
					e.waitDone(b, id, 30*time.Minute)
				}
				hwm := vmHWM(b, child.Pid())
				child.Kill()
				peak = max(peak, hwm)
			}
			b.ReportMetric(float64(peak)/mib, "peak-RSS-MiB")
			b.ReportMetric(float64(bound)/mib, "bound-MiB")
			b.ReportMetric(float64(tc.fileBytes*int64(tc.uploads))/mib, "uploaded-MiB/op")
			b.ReportMetric(0, "ns/op")
			if peak > bound {
				b.Errorf("peak RSS %d MiB exceeds the bound %d MiB", peak/mib, bound/mib)
			}
		})
	}
}
