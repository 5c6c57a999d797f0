package bench

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/hibiken/asynq"

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
// per round five ways, to the same versitygw, rotating which goes first:
//
//   - ferry: enqueue → in-process worker → versitygw, integrity on, as
//     every profile is by default (on the versitygw provider:
//     x-amz-checksum-crc32c on each part, the object's CRC32C checked at
//     Complete, the file read once more for it first);
//   - ferry-md5: the same on the generic provider (Content-MD5 on each
//     part instead of CRC32C: what an S3-compatible server not known to
//     verify CRC32C gets);
//   - ferry-nocheck: the same on a profile with storage.Config.Integrity
//     false (a measurement switch the config file does not offer);
//   - direct-md5: transfermanager.UploadObject with Content-MD5 on each
//     part (a Build middleware hashing the part's body): the same check
//     ferry makes here, at the same cost to client and server;
//   - direct-crc: transfermanager with the SDK's checksums on (a CRC32
//     trailer on each part, which the server verifies: the same level of
//     checking with a cheaper hash, what AWS profiles get);
//   - direct: transfermanager with checksums off (earlier runs' reference).
//
// Same part size and concurrency everywhere. Targets: ferry / direct-crc
// (ratio) and ferry-md5 / direct-md5 (md5-ratio) ≥ 0.95, each against the
// direct path with the same kind of check; integrity-cost is 1 − ferry /
// ferry-nocheck.
func BenchmarkLargeUpload(b *testing.B) {
	e := newEnv(b)
	size := benchSize(b)
	path := writeRandomFile(b, e.dir, "large.bin", size)
	e.startWorker(b, func(c *worker.Config) {
		c.Concurrency = 1
		c.PartSize = largePartSize
		c.PartConcurrency = largePartConc
		off := c.Profiles["default"]
		off.Integrity = aws.Bool(false)
		c.Profiles["nocheck"] = off
		c.Profiles["md5"] = e.s3.Profile() // generic: Content-MD5
	})
	sc := e.s3.Client()
	tm := func(check aws.RequestChecksumCalculation) *transfermanager.Client {
		return transfermanager.New(sc, func(o *transfermanager.Options) {
			o.PartSizeBytes = largePartSize
			o.Concurrency = largePartConc
			o.RequestChecksumCalculation = check
		})
	}
	tmCRC, tmPlain := tm(aws.RequestChecksumCalculationWhenSupported), tm(aws.RequestChecksumCalculationWhenRequired)
	tmMD5 := transfermanager.New(s3.New(sc.Options(), func(o *s3.Options) { o.APIOptions = append(o.APIOptions, addContentMD5) }),
		func(o *transfermanager.Options) {
			o.PartSizeBytes = largePartSize
			o.Concurrency = largePartConc
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		})
	ctx := context.Background()
	ferry := func(profile string) func(string) {
		return func(key string) {
			id := e.enq(b)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path},
				Dest: tasks.Location{Profile: profile, Bucket: e.bucket, Key: key}, PartSize: largePartSize, PartConcurrency: largePartConc, Size: size}))
			e.waitDone(b, id, 30*time.Minute)
		}
	}
	direct := func(tm *transfermanager.Client) func(string) {
		return func(key string) {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if _, err := tm.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: &e.bucket, Key: &key, Body: f}); err != nil {
				b.Fatal(err)
			}
		}
	}
	paths := []struct {
		name string
		run  func(string)
		d    time.Duration
	}{
		{name: "ferry", run: ferry("")},
		{name: "ferry-nocheck", run: ferry("nocheck")},
		{name: "ferry-md5", run: ferry("md5")},
		{name: "direct-md5", run: direct(tmMD5)},
		{name: "direct-crc", run: direct(tmCRC)},
		{name: "direct", run: direct(tmPlain)},
	}
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
	contentMD5Parts.Store(0)
	b.ResetTimer()
	for i := range b.N {
		for j := range paths {
			p := &paths[(i+j)%len(paths)]
			p.d += timed(p.run, fmt.Sprintf("%s-%d", p.name, i))
		}
	}
	mibs := func(d time.Duration) float64 { return float64(size) * float64(b.N) / mib / d.Seconds() }
	ferryOn, ferryOff, ferryMD5 := mibs(paths[0].d), mibs(paths[1].d), mibs(paths[2].d)
	md5d, crcd, plain := mibs(paths[3].d), mibs(paths[4].d), mibs(paths[5].d)
	b.ReportMetric(ferryOn, "ferry-MiB/s")
	b.ReportMetric(ferryOff, "ferry-nocheck-MiB/s")
	b.ReportMetric(ferryMD5, "ferry-md5-MiB/s")
	b.ReportMetric(md5d, "direct-md5-MiB/s")
	b.ReportMetric(crcd, "direct-crc-MiB/s")
	b.ReportMetric(plain, "direct-MiB/s")
	b.ReportMetric(ferryOn/crcd, "ratio")
	b.ReportMetric(ferryMD5/md5d, "md5-ratio")
	b.ReportMetric(ferryOff/plain, "nocheck-ratio")
	b.ReportMetric(float64(contentMD5Parts.Load())/float64(b.N), "direct-md5-parts/op")
	b.ReportMetric(1-ferryOn/ferryOff, "integrity-cost")
	b.ReportMetric(0, "ns/op")
}

// contentMD5Parts counts the requests addContentMD5 hashed: the benchmark
// reports it, so a direct-md5 path that checked nothing would show.
var contentMD5Parts atomic.Int64

// addContentMD5 adds a Build middleware that sets Content-MD5 on every
// request with a seekable body (UploadPart, PutObject), hashed from the
// body before it is sent, as ferry does.
func addContentMD5(stack *middleware.Stack) error {
	return stack.Build.Add(middleware.BuildMiddlewareFunc("benchContentMD5", func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
		req, ok := in.Request.(*smithyhttp.Request)
		if ok && req.IsStreamSeekable() && req.GetStream() != nil {
			h := md5.New()
			if _, err := io.Copy(h, req.GetStream()); err != nil {
				return middleware.BuildOutput{}, middleware.Metadata{}, err
			}
			if err := req.RewindStream(); err != nil {
				return middleware.BuildOutput{}, middleware.Metadata{}, err
			}
			req.Header.Set("Content-MD5", base64.StdEncoding.EncodeToString(h.Sum(nil)))
			contentMD5Parts.Add(1)
		}
		return next.HandleBuild(ctx, in)
	}), middleware.After)
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
	ferry := func(round string) {
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
						Dest: tasks.Location{Bucket: e.bucket, Key: fmt.Sprintf("ferry/%s/%04d", round, i)}}))
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
	direct := func(round string) { directPuts(b, e, paths, smallSize, smallConc, "direct/"+round+"/") }
	alternate(b, smallCount, "", ferry, direct)
}

// BenchmarkQueueOverhead measures enqueue latency (tasks.Client.Enqueue of
// a put task, one at a time, on a queue no worker serves) and idle pickup
// latency: from just before Enqueue to the worker's handler chain starting,
// with the worker idle and its TaskCheckInterval at the default (20 ms).
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

// Batch comparison: 2,000 × 64 KiB, 16 objects in flight on both paths
// (ferry: worker Concurrency 4 × batch concurrency 4).
const (
	batchCount = 2000
	batchSize  = 64 << 10
	batchConc  = 16
)

// BenchmarkBatchPut puts 2,000 files of 64 KiB per round through the
// producer API as ferry:batch tasks and with PutObject from 16 goroutines,
// alternating which goes first. The sub-benchmarks vary the objects per
// batch (items-500 is tasks.MaxBatchItems); enqueue-batch is what
// Client.EnqueueBatch does (tasks.SplitBatch: 32 batches of 62–63). They
// are the measurement behind MaxBatchItems and SplitBatch. Target: ratio
// ≥ 0.9.
func BenchmarkBatchPut(b *testing.B) {
	e := newEnv(b)
	paths := make([]string, batchCount)
	for i := range paths {
		paths[i] = writeRandomFile(b, e.dir, fmt.Sprintf("batch-%04d", i), batchSize)
	}
	e.startWorker(b, func(c *worker.Config) { inFlight(c, batchConc, false) })
	ctx := context.Background()
	direct := func(round string) { directPuts(b, e, paths, batchSize, batchConc, "direct/"+round+"/") }
	for _, per := range []int{50, 250, tasks.MaxBatchItems, 0} {
		name := fmt.Sprintf("items-%d", per)
		if per == 0 {
			name = "enqueue-batch"
		}
		b.Run(name, func(b *testing.B) {
			ferry := func(round string) {
				items := make([]tasks.BatchItem, len(paths))
				for i, p := range paths {
					items[i] = tasks.BatchItem{Source: tasks.Location{Path: p}, Dest: tasks.Location{Bucket: e.bucket, Key: fmt.Sprintf("ferry/%s/%04d", round, i)}, Size: batchSize}
				}
				done := e.completions(b)
				n := 0
				if per == 0 {
					infos, err := e.client.EnqueueBatch(ctx, items, 0, asynq.Queue(e.queue))
					if err != nil {
						b.Fatal(err)
					}
					n = len(infos)
				} else {
					for chunk := range slices.Chunk(items, per) {
						e.enq(b)(tasks.NewBatchTask(tasks.BatchPayload{Items: chunk}))
						n++
					}
				}
				done(n)
			}
			alternate(b, batchCount, fmt.Sprintf("%d-", per), ferry, direct)
		})
	}
}

// alternate times ferry and direct once per round of b.N, each with its
// round's name (tag plus the round number, for distinct keys), alternating
// which goes first so neither always meets the server warmer, and reports
// both paths in objects per second (objects per round) and ferry / direct
// as "ratio", the figure the targets are stated in. Both paths first run
// one untimed round (warmUp).
func alternate(b *testing.B, objects int, tag string, ferry, direct func(round string)) {
	var dFerry, dDirect time.Duration
	var cFerry, cDirect cpuMeter
	timed := func(f func(string), round string, m *cpuMeter) time.Duration {
		start := time.Now()
		m.measure(func() { f(round) })
		return time.Since(start)
	}
	warmUp(func() { ferry(tag + "warm") }, func() { direct(tag + "warm") })
	b.ResetTimer()
	for i := range b.N {
		round := fmt.Sprintf("%s%d", tag, i)
		if i%2 == 0 {
			dFerry += timed(ferry, round, &cFerry)
			dDirect += timed(direct, round, &cDirect)
		} else {
			dDirect += timed(direct, round, &cDirect)
			dFerry += timed(ferry, round, &cFerry)
		}
	}
	ops := func(d time.Duration) float64 { return float64(objects*b.N) / d.Seconds() }
	b.ReportMetric(ops(dFerry), "ferry-obj/s")
	b.ReportMetric(ops(dDirect), "direct-obj/s")
	b.ReportMetric(ops(dFerry)/ops(dDirect), "ratio")
	reportCPU(b, objects*b.N, cFerry, cDirect)
	b.ReportMetric(0, "ns/op")
}

// warmUp runs each path once, untimed, after flushing the fixtures to
// disk. The first round after the fixtures were written ran 1.5–2.5 times
// slower than the rounds after it (2026-12-01, local tree: 1.9–3.0 s
// against 1.1–1.3 s), whichever path it was: the kernel was still writing
// back the files or objects just created, and the server met a fresh
// bucket. alternate starts with ferry, so that round was charged to ferry
// every time, about 6 % of a 6-round total. A long-running worker and a
// direct program that has run before are what the targets compare.
func warmUp(ferry, direct func()) {
	syscall.Sync()
	ferry()
	direct()
}

// directPuts is the direct SDK path of the small-object benchmarks: each
// file of size bytes PutObject'ed to prefix plus its index, from conc
// goroutines.
func directPuts(b *testing.B, e *env, paths []string, size int64, conc int, prefix string) {
	sc := e.s3.Client()
	ctx := context.Background()
	var wg sync.WaitGroup
	next := make(chan int)
	for range conc {
		wg.Go(func() {
			for i := range next {
				f, err := os.Open(paths[i])
				if err != nil {
					b.Error(err)
					return
				}
				key := fmt.Sprintf("%s%04d", prefix, i)
				_, err = sc.PutObject(ctx, &s3.PutObjectInput{Bucket: &e.bucket, Key: &key, Body: f, ContentLength: aws.Int64(size)})
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
