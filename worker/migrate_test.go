package worker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/testenv"
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
	// A migration a takeover finished (after a worker was killed) is still
	// active (then retrying) in asynq until its own run, after the lease
	// recovery, ends from the takeover's done mark and writes the report.
	ti := b.info(t, id)
	for deadline := time.Now().Add(4 * time.Minute); ti.State != asynq.TaskStateCompleted && ti.State != asynq.TaskStateArchived && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		ti = b.info(t, id)
	}
	var rep worker.MigrateReport
	if err := json.Unmarshal(ti.Result, &rep); err != nil {
		t.Fatalf("migration report %q (%s): %v", ti.Result, ti.State, err)
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
	// The extra must be older than the migration's start (a dry run of
	// unchanged objects decides from the listings in well under a second).
	time.Sleep(testenv.ExtrasSettle)
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
// 2,000-object migration: it completes, every object is correct, and no
// object was written twice (by a copy task or as a batch item) unless it
// was in flight at a kill or, as a batch item, logged done by a worker
// after its last write of the batch's record.
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

	fleet := b.killFleetTwice(t, id, workers, 300, 1000)
	p := b.wait(t, id, 6*time.Minute)
	rep := migrateReport(t, b, id)
	// Exact counts: each object counted once, as copied (a page is
	// committed at once, with its tasks; nothing is listed twice).
	if p.State != tasks.StateCompleted || rep.Failed != 0 || rep.Copied != 2000 || rep.Skipped != 0 {
		t.Fatalf("after two fleet kills: %+v / %+v", p, rep)
	}
	checkMigrated(t, src, dst, "src/", "dst/", sums)
	// Objects written: by a copy task, or as an item of a batch.
	done := map[string]int{}
	unrec := map[string]bool{} // batch items some worker logged done but not recorded
	for _, c := range fleet {
		for _, tid := range c.copiesDone(t) {
			done[tid]++
		}
		for _, it := range logged[struct {
			TaskID string `json:"task_id"`
			Item   int    `json:"item"`
		}](t, c, "batch item done") {
			done[fmt.Sprintf("%s#%d", it.TaskID, it.Item)]++
		}
		for tid, items := range unrecorded(t, c) {
			for i := range items {
				unrec[fmt.Sprintf("%s#%d", tid, i)] = true
			}
		}
	}
	twice, itemsTwice := 0, 0
	var unexplained []string
	for k, n := range done {
		if n > 1 {
			twice += n - 1
			if strings.Contains(k, "#") {
				itemsTwice += n - 1
				if !unrec[k] {
					unexplained = append(unexplained, k)
				}
			}
		}
	}
	// A batch item written again though the worker that logged it done had
	// recorded it is a bug: seen once (11 items of one batch, load ~60)
	// before a finished batch kept its record until asynq had recorded its
	// end (batchRetiredTTL, forgetChild); TestBatchRunAgainAfterItFinished
	// reproduces that case.
	if len(unexplained) > 0 {
		slices.Sort(unexplained)
		t.Errorf("%d batch items written again though every worker that logged them done had recorded them: %v", len(unexplained), unexplained)
	}
	t.Logf("migration survived 2 fleet kills: %d copied, %d skipped; %d copies ran twice", rep.Copied, rep.Skipped, twice)
	// In flight at each of the 2 kills: a copy per worker slot, or a
	// batch with batch_concurrency (16) items; and the batch items a
	// killed worker had logged done after its last write of their record
	// (the record is written in groups, every 100 ms).
	if limit := 2*workers*perWorker*16 + len(unrec); twice > limit {
		t.Errorf("%d objects were written twice (%d of them batch items); only those in flight at a kill, or logged done and not yet recorded (%d), may be (at most %d)",
			twice, itemsTwice, len(unrec), limit)
	}
	b.checkNoUploadsLeft(t, dst)
}

// checkNoUploadsLeft fails t if dst holds a multipart upload ferry lost
// track of after a test's kills. A kill between CreateMultipartUpload and
// its checkpoint leaves an upload only the registry names, by its intent or
// its recorded id (docs/worker.md, the janitor): the janitor aborts it once
// its task has ended and janitor_upload_ttl has passed. The check runs the
// janitor for those tasks, as it would then; an upload a checkpoint still
// names, or whatever is left after the janitor, fails it.
func (b *bundle) checkNoUploadsLeft(t *testing.T, dst *storage.S3) {
	t.Helper()
	ctx := context.Background()
	ups, err := dst.ListMultipartUploads(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) == 0 {
		return
	}
	w := b.start(t)
	for _, u := range ups {
		ran, checkpointed, err := worker.CollectIntentOrphans(ctx, w, dst.Bucket(), u.Key, u.UploadID)
		if err != nil {
			t.Fatal(err)
		}
		if checkpointed {
			t.Errorf("upload %s of %s is still named by a checkpoint after the migration ended", u.UploadID, u.Key)
			continue
		}
		t.Logf("upload %s of %s: the janitor ran for the tasks whose intents name it: %v", u.UploadID, u.Key, ran)
	}
	if ups, _ := dst.ListMultipartUploads(ctx, ""); len(ups) != 0 {
		t.Errorf("multipart uploads left (after the janitor ran for the tasks whose intents name them): %+v", ups)
	}
}

// killFleetTwice runs migration id on a fleet of workers child workers
// (Concurrency 2 each), kills the whole fleet once the migration has
// copied first objects, starts a new fleet, kills that one at second
// copies, and starts a third to finish it. It returns every worker it
// started, for their logs.
func (b *bundle) killFleetTwice(t *testing.T, id string, workers int, first, second int64) []*child {
	t.Helper()
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
	waitCopied(first)
	for _, c := range fleet {
		c.kill(t)
	}
	startFleet(1)
	waitCopied(second)
	for _, c := range fleet[workers:] {
		c.kill(t)
	}
	startFleet(2)
	return fleet
}
