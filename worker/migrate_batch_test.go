package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// requestCountingProfile adds the profile name to c: the "default" server
// through a proxy that counts requests by method.
func requestCountingProfile(t *testing.T, c *worker.Config, name string) *testenv.CountingProxy {
	t.Helper()
	p := c.Profiles["default"]
	proxy := testenv.NewCountingProxy(t, p.EndpointURL, nil)
	p.EndpointURL = proxy.URL
	c.Profiles[name] = p
	return proxy
}

// TestMigrateRerunCostsNothing (issue 12): re-running a finished
// migration lists both sides and sends nothing else — no HEAD, no write —
// for small and multipart objects alike. A change of the source's headers
// alone (the same bytes written again with another Content-Type: the
// same ETag) moves its LastModified past the copy's, and the next run
// copies that object, still without a HEAD of its own.
func TestMigrateRerunCostsNothing(t *testing.T) {
	t.Parallel()
	var reqs *testenv.CountingProxy
	b := setup(t, func(c *worker.Config) { reqs = requestCountingProfile(t, c, "counted") })
	b.start(t)
	ctx := context.Background()
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	const n = 300
	data := map[string][]byte{}
	for i := range n {
		key := fmt.Sprintf("r/obj-%03d", i)
		data[key] = randomBytes(1 + i*37)
		if _, err := src.PutBytes(ctx, key, data[key], &storage.PutOptions{
			Headers: storage.Headers{ContentType: "text/plain"}, Metadata: map[string]string{"seq": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	// Above the batch limit: a copy task of its own.
	if _, err := src.PutBytes(ctx, "r/large", randomBytes(int(tasks.MaxBatchObjectSize)+1), nil); err != nil {
		t.Fatal(err)
	}
	p := tasks.MigratePayload{Source: tasks.Location{Profile: "counted", Key: "r/"}, Dest: tasks.Location{Profile: "counted", Key: "r/"}}
	if prog, rep := migrateRun(t, b, dstBucket, p); prog.State != tasks.StateCompleted || rep.Copied != n+1 || rep.Failed != 0 {
		t.Fatalf("first run: %s %+v", prog.State, rep)
	}
	_, _ = reqs.Take()
	prog, rep := migrateRun(t, b, dstBucket, p)
	if prog.State != tasks.StateCompleted || rep.Skipped != n+1 || rep.Copied != 0 {
		t.Fatalf("re-run: %s %+v; want all %d skipped", prog.State, rep, n+1)
	}
	if got, _ := reqs.Take(); len(got) != 1 || got[http.MethodGet] == 0 {
		t.Errorf("re-running a finished migration sent %v; want listings (GET) only", got)
	}

	// The source's Content-Type changed, bytes the same (so the same
	// ETag): written again a second after the migration (LastModified has
	// seconds). A copy onto itself would do on S3, which gives the copy a
	// new LastModified; versitygw keeps the old one.
	time.Sleep(1100 * time.Millisecond)
	key := "r/obj-007"
	if _, err := src.PutBytes(ctx, key, data[key], &storage.PutOptions{Headers: storage.Headers{ContentType: "application/json"},
		Metadata: map[string]string{"seq": "7"}}); err != nil {
		t.Fatal(err)
	}
	_, _ = reqs.Take()
	prog, rep = migrateRun(t, b, dstBucket, p)
	if prog.State != tasks.StateCompleted || rep.Copied != 1 || rep.Skipped != n {
		t.Fatalf("run after a header change at the source: %s %+v; want 1 copied", prog.State, rep)
	}
	// The copy's own requests about its object, nothing about the others.
	if got, heads := reqs.Take(); slices.ContainsFunc(heads, func(p string) bool { return !strings.HasSuffix(p, "/"+key) }) {
		t.Errorf("the run after a header change sent %v, HEADs of %v; want HEADs of %s only (the copy's)", got, heads, key)
	}
	if d, err := b.storageOn(t, dstBucket).Info(ctx, key); err != nil || d.ContentType != "application/json" {
		t.Errorf("destination %s: Content-Type %q (%v), want the source's new application/json", key, d.ContentType, err)
	}
}

// TestMigrateRedisIsFlat (issue 12.3) migrates 20,000 small objects on a
// Redis server of its own: afterwards Redis holds no key per object or per
// batch — the migration's compact state and its task's record only — and
// used_memory is within 1 MiB of before, at its peak within 32 MiB. Both
// less what Redis holds for client connections (mem_clients_normal: the
// buffers of the worker's pooled connections, which grow with its
// concurrency, not with the objects), logged beside.
func TestMigrateRedisIsFlat(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("writes and migrates 20,000 objects (~1-2 min)")
	}
	proc, err := testenv.StartRedisProcess("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proc.Stop)
	rdb := redis.NewClient(&redis.Options{Addr: proc.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	b := setup(t, func(c *worker.Config) { c.Redis = rdb; c.Concurrency = 8 })
	b.rdb, b.client = rdb, tasks.NewClient(rdb)
	b.start(t)
	ctx := context.Background()
	const n = 20000
	src := b.storage(t)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := src.PutBytes(ctx, fmt.Sprintf("flat/%02d/%05d", i%50, i), []byte(fmt.Sprintf("object %05d", i)), nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	dstBucket := b.s3.Bucket(t)
	// Let the worker register itself (servers, workers, queues) first.
	time.Sleep(time.Second)
	before := redisKeys(t, rdb)
	memBefore, clientsBefore := redisMemory(t, rdb)
	var peak atomic.Int64
	var sampleErr error // the sampler's first error, read after sampled
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			// Not redisMemory: t.Fatal belongs to the test's goroutine.
			m, c, err := testenv.RedisMemory(context.Background(), rdb)
			if err != nil {
				sampleErr = err
				return
			}
			if m-c > peak.Load() {
				peak.Store(m - c)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: s3loc("", b.bucket, "flat/"), Dest: s3loc("", dstBucket, "flat/")}))
	prog := b.wait(t, id, 6*time.Minute)
	took := time.Since(start)
	close(stop)
	<-sampled
	if sampleErr != nil {
		t.Fatalf("sample Redis memory: %v", sampleErr)
	}
	rep := migrateReport(t, b, id)
	if prog.State != tasks.StateCompleted || rep.Copied != n || rep.Listed != n || rep.Failed != 0 {
		t.Fatalf("migration of %d objects: %s %+v", n, prog.State, rep)
	}
	after := redisKeys(t, rdb)
	memAfter, clientsAfter := redisMemory(t, rdb)
	// The fleet's throughput counters (one per 10 s, expiring on their
	// own, at most ~93 whatever the objects) are not the migration's.
	added := slices.DeleteFunc(slices.Clone(after), func(k string) bool {
		return slices.Contains(before, k) || strings.HasPrefix(k, "ferry:throughput:")
	})
	grew, peakGrew := (memAfter-clientsAfter)-(memBefore-clientsBefore), peak.Load()-(memBefore-clientsBefore)
	t.Logf("FIGURES migrate-flat: %d objects in %s (%.0f/s); Redis keys %d → %d (+%d: %v); used_memory %d → %d bytes, clients' %d → %d; without the clients' +%d after, +%d at peak",
		n, took.Round(time.Millisecond), n/took.Seconds(), len(before), len(after), len(added), added,
		memBefore, memAfter, clientsBefore, clientsAfter, grew, peakGrew)
	// The migration's task record, its progress hash and state hash, and
	// asynq's per-queue and per-day counters.
	if len(added) > 10 {
		t.Errorf("%d keys added by a migration of %d objects; want a few, none per object or batch: %v", len(added), n, added)
	}
	for _, k := range after {
		if strings.HasPrefix(k, "ferry:batch:") || strings.Contains(k, "ferry-migb-") || strings.Contains(k, "ferry-mig-") {
			t.Errorf("a batch or copy of the migration outlived it: %s", k)
		}
	}
	if grew > 1<<20 {
		t.Errorf("used_memory (less the clients') grew by %d bytes after the migration; want at most 1 MiB", grew)
	}
	if peakGrew > 32<<20 {
		t.Errorf("used_memory (less the clients') peaked %d bytes above the baseline; want at most 32 MiB", peakGrew)
	}
	if got := countObjects(t, b.storageOn(t, dstBucket), "flat/"); got != n {
		t.Errorf("%d objects at the destination; want %d", got, n)
	}
}

func countObjects(t *testing.T, s *storage.S3, prefix string) int {
	t.Helper()
	n := 0
	for _, err := range s.List(context.Background(), prefix, 0) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

// TestMigrateBatchKilledResumes SIGKILLs the worker while a batch of a
// migration is half done (its record shows some items, not all), and
// starts another: the migration completes with exact counts (every object
// copied once in the report, none skipped or failed), every object is
// correct, and only the items in flight at the kill, or logged done by the
// first worker after its last write of their batch's record, were written
// twice.
func TestMigrateBatchKilledResumes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits for asynq's lease recovery (~1-2 min)")
	}
	b := setup(t, nil)
	ctx := context.Background()
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	dst := b.storageOn(t, dstBucket)
	const n = 600
	sums := fillSource(t, src, "src/", n, 0)
	id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: s3loc("", b.bucket, "src/"),
		Dest: s3loc("other", dstBucket, "dst/"), Window: 4}))
	first := b.startChild(t, "first", 2)
	var killedBatch string
	for deadline := time.Now().Add(3 * time.Minute); killedBatch == ""; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no batch of the migration got going")
		}
		ids, _ := b.rdb.HKeys(ctx, "ferry:migrate:{"+id+"}:batches").Result()
		for _, bid := range ids {
			if c, _ := b.rdb.BitCount(ctx, "ferry:batch:{"+bid+"}", nil).Result(); c >= 20 && c < 90 {
				killedBatch = bid
				break
			}
		}
	}
	first.kill(t)
	second := b.startChild(t, "second", 2)
	p := b.wait(t, id, 5*time.Minute)
	rep := migrateReport(t, b, id)
	if p.State != tasks.StateCompleted || rep.Listed != n || rep.Copied != n || rep.Skipped != 0 || rep.Failed != 0 {
		t.Fatalf("after the kill: %s %+v; want %d listed and copied, none skipped or failed", p.State, rep, n)
	}
	checkMigrated(t, src, dst, "src/", "dst/", sums)
	type item struct {
		TaskID string `json:"task_id"`
		Item   int    `json:"item"`
	}
	written := map[item]int{}
	for _, c := range []*child{first, second} {
		for _, it := range logged[item](t, c, "batch item done") {
			written[it]++
		}
	}
	twice := 0
	for _, k := range written {
		twice += k - 1
	}
	t.Logf("migration batch %s killed mid-way: %d objects written, %d twice", killedBatch, len(written), twice)
	// An item recorded done just before the kill but not yet logged is
	// in no log: at most those in flight.
	if len(written) > n || len(written) < n-2*16 {
		t.Errorf("%d distinct items logged as written; want %d (less at most those in flight at the kill)", len(written), n)
	}
	// Logged as written twice: logged done by the first worker and not
	// yet in its batch's record (no "batch items recorded" line of the
	// first has it), then written by the second.
	unrec, allowed := unrecorded(t, first), 0
	for _, items := range unrec {
		allowed += len(items)
	}
	for it, k := range written {
		if k > 1 && !unrec[it.TaskID][it.Item] {
			t.Errorf("item %d of batch %s was written %d times, though the first worker had logged it as recorded", it.Item, it.TaskID, k)
		}
	}
	if twice > allowed {
		t.Errorf("%d items were written twice; only the %d the first worker logged done after the last write of their record may be", twice, allowed)
	}
	// This migration's batches (tests running beside it have theirs).
	batches := map[string]bool{}
	for it := range written {
		batches[it.TaskID] = true
	}
	for bid := range batches {
		if keys, _ := b.rdb.Keys(ctx, "ferry:batch:{"+bid+"}*").Result(); len(keys) != 0 {
			t.Errorf("batch records left: %v", keys)
		}
	}
}

// redisMemory is testenv.RedisMemory; an error fails t.
func redisMemory(t *testing.T, rdb *redis.Client) (used, clients int64) {
	t.Helper()
	used, clients, err := testenv.RedisMemory(context.Background(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	return used, clients
}
