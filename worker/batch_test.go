package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// batchKey is the worker's record of a batch's finished items.
func batchKey(id string) string { return "ferry:batch:{" + id + "}" }

// recordRetired fails t unless the record of finished batch id is gone or
// expires within worker.BatchRetiredTTL (a finished batch keeps it that
// long, for a run of the same task after it; see
// TestBatchRunAgainAfterItFinished) — never the 7 days of a batch that
// stopped to resume.
func recordRetired(t *testing.T, rdb *redis.Client, id string) {
	t.Helper()
	for _, key := range []string{batchKey(id), "ferry:batch:{" + id + "}:bytes"} {
		ttl, err := rdb.TTL(context.Background(), key).Result()
		if err != nil {
			t.Fatal(err)
		}
		// -2: no such key. -1 (no expiry) and anything longer fail.
		if ttl != -2*time.Nanosecond && (ttl < 0 || ttl > worker.BatchRetiredTTL) {
			t.Errorf("the finished batch's record %s expires in %s; want within %s", key, ttl, worker.BatchRetiredTTL)
		}
	}
}

// batchResult waits for asynq to leave the active state (the progress is
// final a moment before) and returns the task's info and its BatchResult.
func batchResult(t *testing.T, b *bundle, id string) (*asynq.TaskInfo, tasks.BatchResult) {
	t.Helper()
	ti := b.info(t, id)
	for deadline := time.Now().Add(10 * time.Second); ti.State == asynq.TaskStateActive && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		ti = b.info(t, id)
	}
	var res tasks.BatchResult
	if err := json.Unmarshal(ti.Result, &res); err != nil {
		t.Fatalf("batch result %q (task %s, %s): %v", ti.Result, id, ti.State, err)
	}
	return ti, res
}

// TestBatchPutsAndCopies runs one batch of local files (empty to 1 MiB),
// server-side copies and cross-endpoint copies: every object arrives with
// its bytes and this task's id, the result counts them, one progress hash
// reports objects and bytes, and the batch's record is gone at the end.
func TestBatchPutsAndCopies(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	ctx := context.Background()
	s := b.storage(t)
	var items []tasks.BatchItem
	want := map[string][]byte{}
	var total int64
	for i, size := range []int{0, 1, 1000, 64 << 10, 1 << 20, 3 << 20} {
		path, data := testenv.RandomFile(t, b.dir, fmt.Sprintf("f%d", i), size)
		key := fmt.Sprintf("batch/put/%d", i)
		items = append(items, tasks.BatchItem{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, key), Size: int64(size),
			ContentType: "application/x-test", Metadata: map[string]string{"n": fmt.Sprint(i)}})
		want[key] = data
		total += int64(size)
	}
	for i, profile := range []string{"default", "other", "default", "other"} {
		src := fmt.Sprintf("batch/src/%d", i)
		data := bytes.Repeat([]byte{byte(i)}, 10_000*(i+1))
		if _, err := s.PutBytes(ctx, src, data, nil); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("batch/copy/%d", i)
		items = append(items, tasks.BatchItem{Source: s3loc(profile, b.bucket, src), Dest: s3loc("", b.bucket, key), Size: int64(len(data))})
		want[key] = data
		total += int64(len(data))
	}
	id := b.enq(t)(tasks.NewBatchTask(tasks.BatchPayload{Items: items, Concurrency: 3}))
	p := b.wait(t, id, 2*time.Minute)
	if p.State != tasks.StateCompleted {
		t.Fatalf("batch ended %+v", p)
	}
	if p.Counters["objects_done"] != int64(len(items)) || p.Counters["objects_total"] != int64(len(items)) || p.Counters["objects_failed"] != 0 || p.BytesDone != total {
		t.Errorf("progress: counters %v, %d bytes; want %d objects done of %d, %d bytes", p.Counters, p.BytesDone, len(items), len(items), total)
	}
	ti, res := batchResult(t, b, id)
	if res.Total != len(items) || res.Done != len(items) || res.Failed != 0 || res.Bytes != total || ti.State != asynq.TaskStateCompleted {
		t.Errorf("result %+v (task %s); want %d done, %d bytes", res, ti.State, len(items), total)
	}
	if ti.Retention != tasks.BatchRetention {
		t.Errorf("retention %s; want %s", ti.Retention, tasks.BatchRetention)
	}
	for key, data := range want {
		if got := mustGet(t, s, key); !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes differ from the source's %d", key, len(got), len(data))
		}
		f, err := s.Info(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if f.Metadata["ferry-task-id"] != id {
			t.Errorf("%s: ferry-task-id %q; want %q", key, f.Metadata["ferry-task-id"], id)
		}
		if strings.HasPrefix(key, "batch/put/") && (f.ContentType != "application/x-test" || f.Metadata["n"] == "") {
			t.Errorf("%s: content type %q, metadata %v; want the item's", key, f.ContentType, f.Metadata)
		}
	}
	recordRetired(t, b.rdb, id)
}

// TestBatchBadItemsFailAlone sends a batch, as a producer that skips
// validation would, with a missing file, a key longer than S3 allows, a
// file outside the allowed directories and a copy onto itself through a
// second profile name: those items fail with their reasons, the others are
// written, and the task is archived with the counts as its result.
func TestBatchBadItemsFailAlone(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	ctx := context.Background()
	s := b.storage(t)
	good1, _ := testenv.RandomFile(t, b.dir, "good1", 100)
	good2, _ := testenv.RandomFile(t, b.dir, "good2", 200)
	outside, _ := testenv.RandomFile(t, t.TempDir(), "outside", 10)
	if _, err := s.PutBytes(ctx, "bad/self", []byte("me"), nil); err != nil {
		t.Fatal(err)
	}
	items := []tasks.BatchItem{
		{Source: tasks.Location{Path: good1}, Dest: s3loc("", b.bucket, "bad/good1")},
		{Source: tasks.Location{Path: filepath.Join(b.dir, "missing")}, Dest: s3loc("", b.bucket, "bad/missing")},
		{Source: tasks.Location{Path: good1}, Dest: s3loc("", b.bucket, "bad/"+strings.Repeat("k", 1100))},
		{Source: tasks.Location{Path: outside}, Dest: s3loc("", b.bucket, "bad/outside")},
		{Source: s3loc("default", b.bucket, "bad/self"), Dest: s3loc("alias", b.bucket, "bad/self")},
		{Source: tasks.Location{Path: good2}, Dest: s3loc("", b.bucket, "bad/good2")},
	}
	raw, err := json.Marshal(tasks.BatchPayload{Items: items})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.NewBatchTask(tasks.BatchPayload{Items: items}); err == nil || !strings.Contains(err.Error(), "item 2") {
		t.Errorf("NewBatchTask with a 1,100-byte key: %v; want the producer to refuse item 2", err)
	}
	id := b.enqueue(t, asynq.NewTask(tasks.TypeBatch, raw, asynq.MaxRetry(3), asynq.Retention(time.Hour)), nil)
	p := b.wait(t, id, time.Minute)
	if p.State != tasks.StateFailed || !strings.Contains(p.Error, "4 of 6 items failed") {
		t.Errorf("batch ended %s: %q; want failed with 4 of 6 items", p.State, p.Error)
	}
	ti, res := batchResult(t, b, id)
	if ti.State != asynq.TaskStateArchived || ti.Retried != 0 {
		t.Errorf("task %s after %d retries; want archived at once (the failures are permanent)", ti.State, ti.Retried)
	}
	if res.Total != 6 || res.Done != 2 || res.Failed != 4 || res.Bytes != 300 || len(res.Failures) != 4 {
		t.Fatalf("result %+v; want 2 done (300 bytes), 4 failed", res)
	}
	reasons := map[int]string{}
	for _, f := range res.Failures {
		reasons[f.Item] = f.Reason
	}
	for item, want := range map[int]string{1: "does not exist", 2: "1024", 3: "outside the worker's allowed directories", 4: "same object"} {
		if !strings.Contains(reasons[item], want) {
			t.Errorf("item %d failed with %q; want a reason containing %q", item, reasons[item], want)
		}
	}
	for _, key := range []string{"bad/good1", "bad/good2"} {
		if ok, err := s.Exists(ctx, key); !ok || err != nil {
			t.Errorf("%s was not written (%v) though only other items were bad", key, err)
		}
	}
	if got := mustGet(t, s, "bad/self"); string(got) != "me" {
		t.Errorf("the refused self-copy changed the object: %q", got)
	}
	recordRetired(t, b.rdb, id)
}

// TestBatchCancel cancels a running batch: no item starts after the cancel
// is seen, the task is archived as cancelled (not retried), its result
// counts the items done and not run, and its record is deleted.
func TestBatchCancel(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	ctx := context.Background()
	var items []tasks.BatchItem
	for i := range tasks.MaxBatchItems {
		path, _ := testenv.RandomFile(t, b.dir, fmt.Sprintf("c%03d", i), 4<<10)
		items = append(items, tasks.BatchItem{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, fmt.Sprintf("cancel/%03d", i)), Size: 4 << 10})
	}
	id := b.enq(t)(tasks.NewBatchTask(tasks.BatchPayload{Items: items, Concurrency: 1}))
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		p, err := b.client.Progress(ctx, id)
		if err == nil && p.Counters["objects_done"] >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the batch did not get going: %+v, %v", p, err)
		}
	}
	if err := b.client.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	p := b.wait(t, id, time.Minute)
	if p.State != tasks.StateCancelled {
		t.Fatalf("after cancel: %+v", p)
	}
	ti, res := batchResult(t, b, id)
	if ti.State != asynq.TaskStateArchived || ti.Retried != 0 {
		t.Errorf("cancelled batch is %s after %d retries; want archived, not retried", ti.State, ti.Retried)
	}
	if res.NotRun == 0 || res.Total != tasks.MaxBatchItems || res.Done+res.Failed+res.NotRun != res.Total || res.Failed != 0 {
		t.Errorf("result %+v; want done + not run = %d, some not run", res, tasks.MaxBatchItems)
	}
	written := 0
	for _, err := range b.storage(t).List(ctx, "cancel/", 0) {
		if err != nil {
			t.Fatal(err)
		}
		written++
	}
	if written != res.Done {
		t.Errorf("%d objects written; the result says %d done", written, res.Done)
	}
	recordRetired(t, b.rdb, id)
	t.Logf("cancelled after %d of %d items", res.Done, res.Total)
}

// TestBatchCrashResumes kills a worker process (SIGKILL) in the middle of a
// batch while a second worker runs: the second takes the batch over within
// seconds (its ownership expired, see takeover.go), under the same task id,
// and writes only the items the record does not show as done: their
// LastModified is unchanged, and the second worker logged none of them.
// The record is written in groups (batchFlushEvery): of the items the
// first worker logged as done, the second writes again exactly those of
// no "batch items recorded" line of the first, never one of such a line.
// asynq's own run of the task, after its lease recovery, finishes from the
// takeover's done mark and writes nothing again.
func TestBatchCrashResumes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("the crash test waits for asynq's lease recovery (~1-2 min)")
	}
	b := setup(t, nil)
	ctx := context.Background()
	s := b.storage(t)
	const n, size, conc = tasks.MaxBatchItems, 128 << 10, 2
	var items []tasks.BatchItem
	for i := range n {
		path, _ := testenv.RandomFile(t, b.dir, fmt.Sprintf("k%03d", i), size)
		items = append(items, tasks.BatchItem{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, fmt.Sprintf("crash/%03d", i)), Size: size})
	}
	id := b.enq(t)(tasks.NewBatchTask(tasks.BatchPayload{Items: items, Concurrency: conc}))
	first := b.startBatchChild(t, "first")
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if c, _ := b.rdb.BitCount(ctx, batchKey(id), nil).Result(); c >= 40 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first worker did not get going")
		}
	}
	second := b.startBatchChild(t, "second")
	first.kill(t)
	killed := time.Now()
	rec, err := b.rdb.Get(ctx, batchKey(id)).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var doneAtKill []int
	modified := map[int]time.Time{}
	for i := range n {
		if i/8 < len(rec) && rec[i/8]&(0x80>>(i%8)) != 0 {
			doneAtKill = append(doneAtKill, i)
			f, err := s.Info(ctx, items[i].Dest.Key)
			if err != nil {
				t.Fatalf("item %d is recorded as done but: %v", i, err)
			}
			modified[i] = f.LastModified
		}
	}
	if len(doneAtKill) == n {
		t.Fatal("the batch finished before the kill; nothing to resume")
	}
	// Seconds from the kill until another worker wrote an item.
	var resumeAfter time.Duration
	for deadline := time.Now().Add(4 * time.Minute); resumeAfter == 0; time.Sleep(100 * time.Millisecond) {
		if p, err := b.client.Progress(ctx, id); err == nil && (p.Counters["objects_done"] > int64(len(doneAtKill)) || p.State.Terminal()) {
			resumeAfter = time.Since(killed)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the batch never resumed (second worker log: %s)", second.Log)
		}
	}
	p := b.wait(t, id, 4*time.Minute)
	if p.State != tasks.StateCompleted {
		t.Fatalf("after the crash the batch ended %+v", p)
	}
	if resumeAfter > 15*time.Second {
		t.Errorf("the batch resumed %.1fs after the kill; the takeover must continue it within 15s", resumeAfter.Seconds())
	}
	if taken := logged[struct{}](t, second, "taking over a task whose worker stopped renewing its ownership"); len(taken) != 1 {
		t.Errorf("the second worker logged %d takeovers; want 1 (log %s)", len(taken), second.Log)
	}
	// asynq shows the dead worker's run active until its lease recovery;
	// the run it starts then must finish from the takeover's done mark.
	ti := b.waitTaskState(t, id, asynq.TaskStateCompleted, 4*time.Minute)
	var res tasks.BatchResult
	if err := json.Unmarshal(ti.Result, &res); err != nil {
		t.Fatalf("batch result %q: %v", ti.Result, err)
	}
	if res.Done != n || res.Resumed != len(doneAtKill) || res.Failed != 0 {
		t.Errorf("result %+v; want %d done, %d of them resumed", res, n, len(doneAtKill))
	}
	if ended := logged[struct{}](t, second, "a takeover finished this task"); len(ended) != 1 {
		t.Errorf("asynq's recovery run did not finish from the takeover's done mark (logged %d times; log %s)", len(ended), second.Log)
	}
	for _, i := range doneAtKill {
		f, err := s.Info(ctx, items[i].Dest.Key)
		if err != nil {
			t.Fatal(err)
		}
		if !f.LastModified.Equal(modified[i]) || f.Metadata["ferry-task-id"] != id || f.Size != size {
			t.Errorf("item %d, done before the kill, was written again: LastModified %s, was %s", i, f.LastModified, modified[i])
		}
	}
	// An item is logged before it is recorded (worker/batch.go, runItem):
	// every item recorded at the kill was logged by the first worker.
	byFirst, bySecond := itemsDone(t, first), itemsDone(t, second)
	for _, i := range doneAtKill {
		if !slices.Contains(byFirst, i) {
			t.Errorf("item %d is recorded as done but the first worker never logged it", i)
		}
	}
	for _, i := range doneAtKill {
		if slices.Contains(bySecond, i) {
			t.Errorf("the second worker wrote item %d again, though it was recorded as done", i)
		}
	}
	if len(doneAtKill)+len(bySecond) != n {
		t.Errorf("items written: %d recorded at the kill + %d by the second worker != %d", len(doneAtKill), len(bySecond), n)
	}
	// Written again: only items the first logged done after its last write
	// of the record; every item of a write it logged is in the record.
	unrec := unrecorded(t, first)[id]
	again := 0
	for _, i := range byFirst {
		if slices.Contains(bySecond, i) {
			again++
			if !unrec[i] {
				t.Errorf("the second worker wrote item %d again, which the first had logged as recorded", i)
			}
		}
	}
	for i := range recordedBy(t, first)[id] {
		if !slices.Contains(doneAtKill, i) {
			t.Errorf("item %d was logged as recorded by the first worker but is not in the record at the kill", i)
		}
	}
	if again > len(unrec) {
		t.Errorf("%d items written again; at most the %d the first logged done after its last write of the record", again, len(unrec))
	}
	if x, _ := b.rdb.Exists(ctx, "ferry:own:{"+id+"}", "ferry:own:{"+id+"}:done").Result(); x != 0 {
		t.Errorf("%d of the batch's ownership keys outlived the batch", x)
	}
	recordRetired(t, b.rdb, id)
	t.Logf("batch crash: killed with %d of %d items recorded (%d logged, %d of them after the last write of the record); resumed %.1fs after the kill; the second worker wrote %d (%d again)",
		len(doneAtKill), n, len(byFirst), len(unrec), resumeAfter.Seconds(), len(bySecond), again)
}

// startBatchChild starts a worker process for batch tests.
func (b *bundle) startBatchChild(t *testing.T, name string) *child {
	t.Helper()
	return b.startChild(t, name, 2)
}

// itemsDone lists the batch items the child logged as written.
func itemsDone(t *testing.T, c *child) []int {
	t.Helper()
	var out []int
	for _, l := range logged[struct {
		Item int `json:"item"`
	}](t, c, "batch item done") {
		out = append(out, l.Item)
	}
	return out
}

// recordedBy lists, per batch (task id), the items the child logged in a
// "batch items recorded" line: written to the batch's record.
func recordedBy(t *testing.T, c *child) map[string]map[int]bool {
	t.Helper()
	out := map[string]map[int]bool{}
	for _, l := range logged[struct {
		TaskID string `json:"task_id"`
		Items  []int  `json:"items"`
	}](t, c, "batch items recorded") {
		if out[l.TaskID] == nil {
			out[l.TaskID] = map[int]bool{}
		}
		for _, i := range l.Items {
			out[l.TaskID][i] = true
		}
	}
	return out
}

// unrecorded lists, per batch (task id), the items the child logged as
// done but in no "batch items recorded" line: what a kill of it may leave
// out of the record, to be written again (with the items in flight, which
// it never logged as done).
func unrecorded(t *testing.T, c *child) map[string]map[int]bool {
	t.Helper()
	rec := recordedBy(t, c)
	out := map[string]map[int]bool{}
	for _, l := range logged[struct {
		TaskID string `json:"task_id"`
		Item   int    `json:"item"`
	}](t, c, "batch item done") {
		if !rec[l.TaskID][l.Item] {
			if out[l.TaskID] == nil {
				out[l.TaskID] = map[int]bool{}
			}
			out[l.TaskID][l.Item] = true
		}
	}
	return out
}

// TestBatchRedisIsFlat puts 2,000 small files through EnqueueBatch on a
// Redis server of its own and counts the keys (SCAN) before and after: a
// batch leaves its task record (payload and result, for BatchRetention) and
// its progress hash, nothing per object. The same count for put tasks, one
// per object, is logged for comparison.
func TestBatchRedisIsFlat(t *testing.T) {
	t.Parallel()
	proc, err := testenv.StartRedisProcess("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proc.Stop)
	rdb := redis.NewClient(&redis.Options{Addr: proc.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	b := setup(t, func(c *worker.Config) { c.Redis = rdb })
	b.rdb, b.client = rdb, tasks.NewClient(rdb)
	b.start(t)
	ctx := context.Background()
	const n = 2000
	var items []tasks.BatchItem
	for i := range n {
		path, _ := testenv.RandomFile(t, b.dir, fmt.Sprintf("r%04d", i), 1<<10)
		items = append(items, tasks.BatchItem{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, fmt.Sprintf("flat/%04d", i)), Size: 1 << 10})
	}
	// Let the worker register itself (servers, workers, queues) first.
	time.Sleep(time.Second)
	before, memBefore := redisKeys(t, rdb), usedMemory(t, rdb)

	start := time.Now()
	infos, err := b.client.EnqueueBatch(ctx, items, 0, asynq.Queue(b.queue))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != tasks.SplitBatches {
		t.Errorf("%d batches for %d items; want %d (SplitBatch)", len(infos), n, tasks.SplitBatches)
	}
	for _, info := range infos {
		if p := b.wait(t, info.ID, 2*time.Minute); p.State != tasks.StateCompleted {
			t.Fatalf("batch %s ended %+v", info.ID, p)
		}
	}
	took := time.Since(start)
	after, memAfter := redisKeys(t, rdb), usedMemory(t, rdb)
	// The fleet's throughput counters (one per 10 s, expiring on their
	// own, at most ~93 whatever the objects) are not the batches'; nor is
	// what asynq keeps of the tasks running right now (asynq:workers:*,
	// rewritten at each 5 s heartbeat with a copy of each active task's
	// message, and the queue's active list and lease set), bounded by the
	// worker's concurrency, and still there for a moment after a batch
	// reports completed.
	// A finished batch's record of items (two small keys) is kept for
	// worker.BatchRetiredTTL, then expires (checked below).
	transient := func(k string) bool {
		return strings.HasPrefix(k, "ferry:throughput:") || strings.HasPrefix(k, "asynq:workers:") ||
			strings.HasSuffix(k, "}:active") || strings.HasSuffix(k, "}:lease") || strings.HasPrefix(k, "ferry:batch:")
	}
	added := slices.DeleteFunc(slices.Clone(after), func(k string) bool {
		return slices.Contains(before, k) || transient(k)
	})
	t.Logf("batches: %d objects in %d batches in %s; Redis keys %d → %d (+%d: %v); used_memory %d → %d bytes",
		n, len(infos), took.Round(time.Millisecond), len(before), len(after), len(added), added, memBefore, memAfter)
	if len(added) > 2*len(infos)+8 {
		t.Errorf("%d keys added for %d batches; want at most the task record and progress of each, plus a few of asynq's queue", len(added), len(infos))
	}
	// What the added keys hold, by Redis' own count (MEMORY USAGE): the
	// batches' payloads, which asynq keeps with their records, and a bounded
	// amount per batch and for the queue — nothing per object.
	var payloads, held int64
	for _, info := range infos {
		payloads += int64(len(info.Payload))
	}
	for _, k := range added {
		n, err := rdb.MemoryUsage(ctx, k).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		held += n
	}
	t.Logf("the added keys hold %d bytes, the payloads %d bytes (%.0f bytes per object beyond them)", held, payloads, float64(held-payloads)/n)
	// Redis' allocator (jemalloc) rounds each allocation up to its size
	// class, at most 25% above a large value (a 68,596-byte task message
	// takes 81,920): the bound allows that, and still fails on ~200 bytes
	// kept per object (2000 objects would add 400 KB to 270 KB).
	if limit := payloads*5/4 + int64(len(infos))*8<<10 + 64<<10; held > limit {
		t.Errorf("the added keys hold %d bytes; want at most the payloads (%d) plus 25%% allocator rounding, 8 KiB a batch and 64 KiB for the queue (%d)", held, payloads, limit)
	}
	for _, info := range infos {
		recordRetired(t, rdb, info.ID)
	}
	written := 0
	for _, err := range b.storage(t).List(ctx, "flat/", 0) {
		if err != nil {
			t.Fatal(err)
		}
		written++
	}
	if written != n {
		t.Errorf("%d objects written; want %d", written, n)
	}

	// For comparison: 200 objects as put tasks, one each.
	const singles = 200
	before = after
	start = time.Now()
	var ids []string
	for i := range singles {
		ids = append(ids, b.enq(t)(tasks.NewPutTask(tasks.PutPayload{Source: items[i].Source, Dest: s3loc("", b.bucket, fmt.Sprintf("single/%04d", i))})))
	}
	for _, id := range ids {
		b.wait(t, id, time.Minute)
	}
	after = redisKeys(t, rdb)
	t.Logf("single put tasks: %d objects in %s; Redis keys %d → %d (+%d, %.1f per object); used_memory %d bytes",
		singles, time.Since(start).Round(time.Millisecond), len(before), len(after), len(after)-len(before),
		float64(len(after)-len(before))/singles, usedMemory(t, rdb))
}

// redisKeys lists every key (SCAN), sorted.
func redisKeys(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	var keys []string
	iter := rdb.Scan(context.Background(), 0, "*", 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

// usedMemory is INFO memory's used_memory.
func usedMemory(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			var n int64
			_, _ = fmt.Sscan(v, &n)
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}
