package worker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// fillSource writes n objects under prefix: mostly small, with `large`
// objects above the part size (they copy as multipart uploads), and returns
// key → SHA-256.
func fillSource(t testing.TB, s *storage.S3, prefix string, n, large int) map[string][32]byte {
	t.Helper()
	ctx := context.Background()
	sums := make(map[string][32]byte, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		size := 1 + mrand.IntN(64<<10)
		if i < large {
			size = storage.MinPartSize + 1 + mrand.IntN(storage.MinPartSize)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			data := make([]byte, size)
			_, _ = rand.Read(data)
			key := fmt.Sprintf("%sdir%02d/obj-%05d", prefix, i%37, i)
			_, err := s.PutLarge(ctx, key, bytes.NewReader(data), &storage.LargeOptions{PartSize: storage.MinPartSize,
				Size: int64(size), Headers: storage.Headers{ContentType: "application/x-ferry"}, Metadata: map[string]string{"seq": fmt.Sprint(i)}})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			sums[key] = sha256.Sum256(data)
			mu.Unlock()
		})
	}
	wg.Wait()
	return sums
}

// checkMigrated verifies every source object arrived with identical bytes
// and metadata.
func checkMigrated(t testing.TB, src, dst *storage.S3, srcPrefix, dstPrefix string, sums map[string][32]byte) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for key, sum := range sums {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			dk := dstPrefix + key[len(srcPrefix):]
			b, err := dst.GetBytes(ctx, dk)
			if err != nil {
				t.Errorf("%s: %v", dk, err)
				return
			}
			if sha256.Sum256(b) != sum {
				t.Errorf("%s: bytes differ from %s", dk, key)
			}
			si, _ := src.Info(ctx, key)
			di, err := dst.Info(ctx, dk)
			if err != nil || di.Metadata["seq"] != si.Metadata["seq"] || di.ContentType != si.ContentType {
				t.Errorf("%s: metadata %v/%q, source %v/%q (%v)", dk, di.Metadata, di.ContentType, si.Metadata, si.ContentType, err)
			}
		})
	}
	wg.Wait()
}

func migrateReport(t testing.TB, b *bundle, id string) worker.MigrateReport {
	t.Helper()
	var rep worker.MigrateReport
	if err := json.Unmarshal(b.info(t, id).Result, &rep); err != nil {
		t.Fatalf("migration report %q: %v", b.info(t, id).Result, err)
	}
	return rep
}

// TestMigrate moves 2,000 objects of mixed sizes between buckets on two
// profiles (the streamed, checkpointed path), then re-runs: nothing is
// copied again; a changed source object is; dry run and --delete-extra too.
func TestMigrate(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *worker.Config) { c.Concurrency = 8 })
	b.start(t)
	ctx := context.Background()
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	dst := b.storageOn(t, dstBucket)
	sums := fillSource(t, src, "src/", 2000, 6)

	migrate := func(p tasks.MigratePayload) (tasks.Progress, worker.MigrateReport) {
		t.Helper()
		p.Source = s3loc("", b.bucket, "src/")
		p.Dest = s3loc("other", dstBucket, "dst/")
		id := b.enq(t)(tasks.NewMigrateTask(p))
		prog := b.wait(t, id, 5*time.Minute)
		return prog, migrateReport(t, b, id)
	}

	start := time.Now()
	prog, rep := migrate(tasks.MigratePayload{Window: 32})
	took := time.Since(start)
	if prog.State != tasks.StateCompleted || rep.Listed != 2000 || rep.Copied != 2000 || rep.Failed != 0 {
		t.Fatalf("first run: %+v / %+v", prog, rep)
	}
	t.Logf("migrated %d objects (%d bytes) in %s: %.0f objects/s, %.1f MiB/s", rep.Copied, rep.Bytes, took,
		float64(rep.Copied)/took.Seconds(), float64(rep.Bytes)/took.Seconds()/(1<<20))
	if prog.Counters["copied"] != 2000 {
		t.Errorf("progress counters %v", prog.Counters)
	}
	checkMigrated(t, src, dst, "src/", "dst/", sums)

	_, rep = migrate(tasks.MigratePayload{})
	if rep.Skipped != 2000 || rep.Copied != 0 {
		t.Errorf("re-run: %+v; want all 2000 skipped", rep)
	}

	var changed string
	for k := range sums {
		changed = k
		break
	}
	if _, err := src.PutBytes(ctx, changed, []byte("new contents"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.PutBytes(ctx, "dst/extra/only-at-dest", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	_, rep = migrate(tasks.MigratePayload{DryRun: true})
	if rep.WouldCopy != 1 || rep.Copied != 0 || len(rep.Sample) != 1 || rep.Sample[0] != changed {
		t.Errorf("dry run: %+v; want exactly %s to be copied", rep, changed)
	}
	if got, _ := dst.GetBytes(ctx, "dst/"+changed[len("src/"):]); string(got) == "new contents" {
		t.Error("the dry run wrote")
	}
	_, rep = migrate(tasks.MigratePayload{DeleteExtra: true})
	if rep.Copied != 1 || rep.Skipped != 1999 || rep.Deleted != 1 {
		t.Errorf("changed source + delete extra: %+v; want 1 copied, 1999 skipped, 1 deleted", rep)
	}
	if got, _ := dst.GetBytes(ctx, "dst/"+changed[len("src/"):]); string(got) != "new contents" {
		t.Error("the changed source object was not copied again")
	}
	if ok, _ := dst.Exists(ctx, "dst/extra/only-at-dest"); ok {
		t.Error("--delete-extra kept an object missing at the source")
	}
}

// TestMigrateSurvivesKills SIGKILLs the whole worker fleet twice during a
// 2,000-object migration: it completes, every object is correct, and no copy
// ran twice unless it was in flight at a kill.
func TestMigrateSurvivesKills(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits for asynq's lease recovery twice (~2-4 min)")
	}
	const workers, perWorker = 2, 2 // childWorkerMain runs Concurrency 2
	b := setup(t, nil)
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	dst := b.storageOn(t, dstBucket)
	sums := fillSource(t, src, "src/", 2000, 4)
	id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: s3loc("", b.bucket, "src/"),
		Dest: s3loc("other", dstBucket, "dst/"), Window: 16}))

	var fleet []*child
	startFleet := func(round int) {
		for i := range workers {
			fleet = append(fleet, b.startChild(t, fmt.Sprintf("round%d-worker%d", round, i), 2))
		}
	}
	waitCopied := func(n int64) {
		t.Helper()
		for deadline := time.Now().Add(4 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			p, err := b.client.Progress(context.Background(), id)
			if err == nil && p.Counters["copied"] >= n {
				return
			}
		}
		t.Fatalf("the migration never reached %d copies", n)
	}
	startFleet(0)
	waitCopied(300)
	for _, c := range fleet {
		c.kill(t)
	}
	startFleet(1)
	waitCopied(1000)
	for _, c := range fleet[workers:] {
		c.kill(t)
	}
	startFleet(2)
	p := b.wait(t, id, 6*time.Minute)
	rep := migrateReport(t, b, id)
	if p.State != tasks.StateCompleted || rep.Failed != 0 || rep.Copied+rep.Skipped != 2000 {
		t.Fatalf("after two fleet kills: %+v / %+v", p, rep)
	}
	checkMigrated(t, src, dst, "src/", "dst/", sums)
	done := map[string]int{}
	for _, c := range fleet {
		for _, tid := range c.copiesDone(t) {
			done[tid]++
		}
	}
	twice := 0
	for _, n := range done {
		if n > 1 {
			twice += n - 1
		}
	}
	t.Logf("migration survived 2 fleet kills: %d copied, %d skipped; %d copies ran twice", rep.Copied, rep.Skipped, twice)
	if limit := 2 * workers * perWorker; twice > limit {
		t.Errorf("%d copies ran twice; only those in flight at a kill may (at most %d)", twice, limit)
	}
	if ups, _ := dst.ListMultipartUploads(context.Background(), ""); len(ups) != 0 {
		t.Errorf("multipart uploads left: %+v", ups)
	}
}
