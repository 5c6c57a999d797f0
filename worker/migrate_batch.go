package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// The enqueue side of a migration: each page of the listing becomes
// ferry:batch tasks for its small objects (copies, or a local tree's
// files) and a task of its own for each large one (childTask: a copy or
// an upload), and the whole page is checkpointed at once.
//
// A page is committed before anything of it is enqueued: one transaction
// moves the cursor past the page, adds its counts, puts its tasks in the
// window and writes their payloads to the migration's outbox. The outbox
// is then enqueued, each entry deleted once its task exists (an id taken
// already is the same task, enqueued before a crash). A crash anywhere
// leaves either the page unlisted (nothing of it enqueued or counted) or
// committed with its tasks in the outbox, which the next run enqueues
// first, so each object is counted once and no page is listed twice.

// Migration batching.
const (
	// migratePage is the most source objects one page of the listing
	// holds: one ListObjectsV2 call.
	migratePage = 1000
	// migrateFirstPage is the first page's: the first batches are
	// enqueued after a short listing (about a fifth of a full one's
	// time), and the worker's slots start while the next page is listed.
	migrateFirstPage = 2 * migrateBatchItems
	// migrateBatchItems is the most objects a migration puts in one
	// batch (also at most tasks.MaxBatchBytes). Smaller than a producer's
	// tasks.MaxBatchItems so that a page spreads over several workers:
	// BenchmarkBatchPut found the queue's cost amortised from about 50
	// objects a task, and fewer, larger batches than worker slots leave
	// slots idle.
	migrateBatchItems = 100
)

// outboxEntry is a committed task of the migration not yet known to be
// enqueued: its type and payload.
type outboxEntry struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// pagePlan is what one page of the listing becomes, committed at once.
type pagePlan struct {
	last     string           // the key of the last object handled: the new cursor
	counts   map[string]int64 // counter field → increment (listed among them)
	failures map[string]string
	ignored  map[string]string // a local tree's entries passed over, with why
	batches  map[string]int    // batch id → objects
	copies   []string          // copy (or upload) task ids
	outbox   map[string]string
}

// finishBatch counts a finished batch of the migration once, however
// often reconciliation sees it, and moves it out of the window.
//
// KEYS[1] batches hash, KEYS[2] state hash, KEYS[3] failures hash
// ARGV[1] batch id, ARGV[2] copied, ARGV[3] failed, ARGV[4] bytes,
// ARGV[5] failure cap, then pairs of failed source key and reason
var finishBatch = redis.NewScript(`
if redis.call("HDEL", KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call("HINCRBY", KEYS[2], "copied", ARGV[2])
redis.call("HINCRBY", KEYS[2], "failed", ARGV[3])
redis.call("HINCRBY", KEYS[2], "bytes", ARGV[4])
for i = 6, #ARGV, 2 do
  if redis.call("HLEN", KEYS[3]) >= tonumber(ARGV[5]) then break end
  redis.call("HSET", KEYS[3], ARGV[i], ARGV[i+1])
end
return 1`)

// pending is the number of the migration's tasks in its window: batches
// and copies.
func (m *migration) pending(ctx context.Context) (int64, error) {
	var copies, batches *redis.IntCmd
	_, err := m.w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		copies = p.SCard(ctx, migratePendingKey(m.id))
		batches = p.HLen(ctx, migrateBatchesKey(m.id))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("migration window: %w", err)
	}
	return copies.Val() + batches.Val(), nil
}

// handlePage decides about each object of a page of the source listing
// (dsts: the destination beside it; want: the selected relative keys) and
// commits the page: in key order until the window has no room for another
// task, the rest being listed again later.
func (m *migration) handlePage(ctx context.Context, entries []listed, dsts map[string]storage.StoredFile, want map[string]bool, room int) error {
	decisions, err := m.decide(ctx, entries, dsts, want)
	if err != nil {
		return err
	}
	pl, err := m.plan(ctx, entries, decisions, max(room, 1))
	if err != nil {
		return err
	}
	if err := m.commit(ctx, pl); err != nil {
		return err
	}
	return m.flushOutbox(ctx)
}

// decide compares each object of a page with the destination listed
// beside it. The listings decide (see sameListed); a HEAD is sent only for
// an object of the same size at both ends whose ETags differ (ferry's
// record of its source may prove it identical), for a folder marker, and,
// with CheckHeaders, for every object of the same size (compare). A local
// tree's file of the same size is compared by compareFile.
func (m *migration) decide(ctx context.Context, entries []listed, dsts map[string]storage.StoredFile, want map[string]bool) ([]decision, error) {
	srcPrefix, dstPrefix := m.p.Source.Key, m.p.Dest.Key
	decisions := make([]decision, len(entries))
	errs := make([]error, len(entries))
	sem := make(chan struct{}, compareConcurrency)
	var wg sync.WaitGroup
	for i, e := range entries {
		f := e.f
		rel := strings.TrimPrefix(f.Key, srcPrefix)
		d, ok := dsts[rel]
		var head func(context.Context, storage.StoredFile, string) (decision, error)
		switch {
		case e.fail != "":
			decisions[i] = decision{verdict: failed, reason: e.fail}
		case e.ignore != "" && m.p.Selects(rel):
			decisions[i] = decision{verdict: ignored, reason: e.ignore}
		case !want[rel]:
			decisions[i].verdict = filtered
		case !ok || d.Size != f.Size:
			decisions[i] = decision{verdict: copyIt, atDest: ok}
		case m.tree != nil:
			head = func(ctx context.Context, _ storage.StoredFile, dstKey string) (decision, error) {
				return m.compareFile(ctx, e, dstKey)
			}
		case m.p.CheckHeaders || isMarker(f.Key):
			// A marker is written by the migration itself, before its
			// page is committed: after a crash only its recorded task id
			// tells this migration's copy (copied) from an earlier one.
			head = m.compare
		case sameListed(f, d):
			decisions[i].verdict = identical
		default:
			head = m.compareRecorded
		}
		if head != nil {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				decisions[i], errs[i] = head(ctx, f, dstPrefix+rel)
			})
		}
	}
	wg.Wait()
	return decisions, errors.Join(errs...)
}

// sameListed reports whether the listings prove the destination d identical
// to the source f (of the same size): the same ETag — a hash of the bytes
// (an MD5, or for a multipart object the MD5 of its parts' MD5s), so equal
// ETags are equal bytes — and the source not modified after the
// destination was written. The second half is what `aws s3 sync` checks:
// a change of the source's headers or metadata alone (a copy onto itself)
// keeps its ETag but moves its LastModified past the copy's. What the
// listings cannot show, a HEAD alone can (CheckHeaders): headers changed at
// the destination, or at the source within the second the copy was made.
func sameListed(f, d storage.StoredFile) bool {
	return f.ETag != "" && f.ETag == d.ETag && !f.LastModified.After(d.LastModified)
}

// compareRecorded decides about a source object f whose destination
// counterpart dstKey has the same size but another ETag in the listings (a
// multipart object copied with other part sizes, a copy made by a single
// PUT, or other bytes): one HEAD of the destination. It is identical when
// ferry recorded copying exactly this source ETag and size there, and the
// source was not modified after it; else it is copied.
func (m *migration) compareRecorded(ctx context.Context, f storage.StoredFile, dstKey string) (decision, error) {
	d, err := m.dst.Info(ctx, dstKey)
	if errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrBucketNotFound) {
		return decision{verdict: copyIt}, nil // deleted since listed
	}
	if err != nil {
		return objectFailure("compare with the destination", err)
	}
	if d.Size == f.Size && d.Metadata[metaSourceETag] == f.ETag && d.Metadata[metaSourceSize] == strconv.FormatInt(f.Size, 10) &&
		!f.LastModified.After(d.LastModified) {
		return decision{verdict: identical}, nil
	}
	return decision{verdict: copyIt}, nil
}

// plan turns a page's decisions into counts, failures and tasks, in key
// order, stopping before the object that would need task number room+1.
// Markers are written here (copyMarker).
func (m *migration) plan(ctx context.Context, entries []listed, decisions []decision, room int) (*pagePlan, error) {
	pl := &pagePlan{counts: map[string]int64{}, failures: map[string]string{}, ignored: map[string]string{},
		batches: map[string]int{}, outbox: map[string]string{}}
	srcPrefix, dstPrefix := m.p.Source.Key, m.p.Dest.Key
	var items []tasks.BatchItem
	var itemBytes int64
	tasksUsed := 0
	closeBatch := func() error {
		if len(items) == 0 {
			return nil
		}
		id := m.batchID(items[0])
		payload, err := json.Marshal(tasks.BatchPayload{Items: items, Migration: m.id})
		if err != nil {
			return fmt.Errorf("batch of the migration: %w", err)
		}
		e, err := json.Marshal(outboxEntry{Type: tasks.TypeBatch, Payload: payload})
		if err != nil {
			return fmt.Errorf("batch of the migration: %w", err)
		}
		pl.outbox[id] = string(e)
		pl.batches[id] = len(items)
		items, itemBytes = nil, 0
		return nil
	}
	fail := func(key, reason string) {
		pl.counts["failed"]++
		pl.failures[key] = reason
		m.log.Warn("object not migrated", zap.String("key", key), zap.String("reason", reason))
	}
	for i, e := range entries {
		f, d := e.f, decisions[i]
		dstKey := dstPrefix + strings.TrimPrefix(f.Key, srcPrefix)
		small := f.Size < tasks.MaxBatchObjectSize
		if d.verdict == copyIt && !m.p.DryRun && !isMarker(f.Key) {
			// Room for the task this object joins or opens?
			opens := !small || len(items) == 0 || len(items) == migrateBatchItems || itemBytes+f.Size > tasks.MaxBatchBytes
			if opens && tasksUsed == room && i > 0 {
				break // the rest is listed again when the window drains
			}
			if opens {
				tasksUsed++
			}
		}
		pl.last = f.Key
		pl.counts["listed"]++
		switch d.verdict {
		case filtered:
			pl.counts["filtered"]++
		case ignored:
			pl.counts["ignored"]++
			pl.counts[stateIgnoredPrefix+d.reason]++
			pl.ignored[f.Key] = d.reason
			m.log.Debug("passed over", zap.String("key", f.Key), zap.String("reason", d.reason))
		case identical:
			pl.counts["skipped"]++
		case copiedAlready:
			pl.counts["copied"]++
			pl.counts["bytes"] += f.Size
		case failed:
			fail(f.Key, d.reason)
		case copyIt:
			if err := m.planCopy(ctx, pl, f, d, dstKey, small, &items, &itemBytes, closeBatch, fail); err != nil {
				return nil, err
			}
		}
	}
	if err := closeBatch(); err != nil {
		return nil, err
	}
	return pl, nil
}

// planCopy plans the copy of f to dstKey: a marker is written now, a dry
// run counts it, a small object joins the open batch (closing it first
// when full), a large one gets its own copy task.
func (m *migration) planCopy(ctx context.Context, pl *pagePlan, f storage.StoredFile, d decision, dstKey string, small bool,
	items *[]tasks.BatchItem, itemBytes *int64, closeBatch func() error, fail func(key, reason string)) error {
	switch {
	case isMarker(f.Key) && f.Size != 0:
		fail(f.Key, fmt.Sprintf("%s ends in \"/\" like a folder marker but holds %d bytes: ferry copies only empty markers; rename it at the source", f.Key, f.Size))
	case m.p.DryRun:
		pl.counts["would_copy"]++
		if len(m.sample) < maxDryRunSample {
			m.sample = append(m.sample, f.Key)
		}
	case isMarker(f.Key):
		md, err := m.copyMarker(ctx, f, dstKey, d.atDest)
		if err != nil {
			return err
		}
		switch md.verdict {
		case copiedAlready:
			pl.counts["copied"]++
		case failed:
			fail(f.Key, md.reason)
		default:
			pl.counts["skipped"]++
		}
	case small:
		it := tasks.BatchItem{Source: tasks.Location{Profile: m.p.Source.Profile, Bucket: m.p.Source.Bucket, Key: f.Key},
			Dest: m.destAt(dstKey), Size: f.Size,
			// The listed version: a server-side copy of it is one
			// request (see BatchItem.SourceETag).
			SourceETag: f.ETag}
		if m.tree != nil {
			it.Source, it.SourceETag = m.tree.source(f.Key), ""
		}
		if err := it.Validate(); err != nil {
			fail(f.Key, fmt.Sprintf("copy to %s: %v", dstKey, err))
			return nil
		}
		if len(*items) == migrateBatchItems || *itemBytes+f.Size > tasks.MaxBatchBytes {
			if err := closeBatch(); err != nil {
				return err
			}
		}
		*items = append(*items, it)
		*itemBytes += f.Size
	default:
		t, cid, err := m.childTask(f, dstKey)
		if err != nil {
			fail(f.Key, err.Error())
			return nil
		}
		e, err := json.Marshal(outboxEntry{Type: t.Type(), Payload: t.Payload()})
		if err != nil {
			return fmt.Errorf("task of %s: %w", f.Key, err)
		}
		pl.outbox[cid] = string(e)
		pl.copies = append(pl.copies, cid)
	}
	return nil
}

// batchID is the id of the batch whose first item is it: unique within a
// run of the migration (an object is in one batch of a run), never shared
// with another run (see childID).
func (m *migration) batchID(first tasks.BatchItem) string {
	return hashID(batchIDPrefix, m.runID(), "batch", first.Source.Key, first.Source.Path, first.Dest.Key)
}

// commit checkpoints a page in one transaction, fenced by the run's
// ownership: the cursor past it, its counts and failures, its tasks in the
// window and their payloads in the outbox.
func (m *migration) commit(ctx context.Context, pl *pagePlan) error {
	var nfail, nignored int64
	if len(pl.failures) > 0 {
		n, err := m.w.rdb.HLen(ctx, migrateFailuresKey(m.id)).Result()
		if err != nil {
			return fmt.Errorf("migration state: %w", err)
		}
		nfail = n
	}
	if len(pl.ignored) > 0 {
		n, err := m.w.rdb.HLen(ctx, migrateIgnoredKey(m.id)).Result()
		if err != nil {
			return fmt.Errorf("migration state: %w", err)
		}
		nignored = n
	}
	// Fenced: a run that lost the migration to another worker's takeover
	// moves no cursor and counts nothing.
	err := m.w.fenced(ctx, m.id, func(p redis.Pipeliner) error {
		if len(pl.outbox) > 0 {
			p.HSet(ctx, migrateOutboxKey(m.id), pl.outbox)
			p.Expire(ctx, migrateOutboxKey(m.id), migrateStateTTL)
		}
		for id, n := range pl.batches {
			p.HSet(ctx, migrateBatchesKey(m.id), id, n)
		}
		if len(pl.batches) > 0 {
			p.Expire(ctx, migrateBatchesKey(m.id), migrateStateTTL)
		}
		for _, id := range pl.copies {
			p.SAdd(ctx, migratePendingKey(m.id), id)
		}
		for k, r := range pl.failures {
			if nfail >= maxReportedFailures {
				break
			}
			p.HSet(ctx, migrateFailuresKey(m.id), k, r)
			nfail++
		}
		for k, r := range pl.ignored {
			if nignored >= maxDryRunSample {
				break
			}
			p.HSet(ctx, migrateIgnoredKey(m.id), k, r)
			nignored++
		}
		p.HSet(ctx, migrateKey(m.id), "cursor", pl.last)
		for field, n := range pl.counts {
			if n != 0 {
				p.HIncrBy(ctx, migrateKey(m.id), field, n)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("checkpoint migration cursor: %w", err)
	}
	return nil
}

// flushOutbox enqueues the committed tasks not yet known to be enqueued.
func (m *migration) flushOutbox(ctx context.Context) error {
	entries, err := m.w.rdb.HGetAll(ctx, migrateOutboxKey(m.id)).Result()
	if err != nil {
		return fmt.Errorf("migration outbox: %w", err)
	}
	// Batches first: a slot that runs a batch moves many objects at once,
	// one that runs a large object's copy one.
	ids := slices.SortedFunc(maps.Keys(entries), func(a, b string) int {
		return cmp.Or(cmp.Compare(outboxRank(a), outboxRank(b)), strings.Compare(a, b))
	})
	for _, id := range ids {
		raw := entries[id]
		t, err := m.outboxTask(id, raw)
		if err != nil {
			return err
		}
		if _, err := m.w.client.Enqueue(ctx, t); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return fmt.Errorf("enqueue %s of the migration: %w", id, err)
		}
		if err := m.w.rdb.HDel(ctx, migrateOutboxKey(m.id), id).Err(); err != nil {
			return fmt.Errorf("migration outbox: %w", err)
		}
	}
	return nil
}

// batchIDPrefix begins the id of each batch of a migration (batchID).
const batchIDPrefix = "ferry-migb-"

// outboxRank orders the outbox: batches before copies and uploads.
func outboxRank(id string) int {
	if strings.HasPrefix(id, batchIDPrefix) {
		return 0
	}
	return 1
}

// outboxTask builds the task of an outbox entry. A migration's batch is
// kept after it ends only until the migration counts it (it then deletes
// it): its retention is a day, not tasks.BatchRetention, so a migration
// whose worker was down for a while still finds its batches' results.
func (m *migration) outboxTask(id, raw string) (*asynq.Task, error) {
	var e outboxEntry
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		return nil, fmt.Errorf("migration outbox entry %s: %w", id, err)
	}
	opts := []asynq.Option{asynq.TaskID(id), asynq.Queue(m.queue)}
	var t *asynq.Task
	var err error
	switch e.Type {
	case tasks.TypeBatch:
		var p tasks.BatchPayload
		if err = json.Unmarshal(e.Payload, &p); err == nil {
			t, err = tasks.NewBatchTask(p, append(opts, asynq.Retention(tasks.DefaultRetention))...)
		}
	case tasks.TypeCopy:
		var p tasks.CopyPayload
		if err = json.Unmarshal(e.Payload, &p); err == nil {
			t, err = tasks.NewCopyTask(p, opts...)
		}
	case tasks.TypeUpload:
		var p tasks.UploadPayload
		if err = json.Unmarshal(e.Payload, &p); err == nil {
			t, err = tasks.NewUploadTask(p, opts...)
		}
	default:
		err = fmt.Errorf("unknown task type %q", e.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("migration outbox entry %s: %w", id, err)
	}
	return t, nil
}

// reconcileBatches counts the migration's finished batches and deletes
// them (with their progress) once counted: a migration leaves no record of
// its objects behind. It inspects the batches look selects, adds every
// batch of the window it did not count to inWindow, and returns how many
// it counted.
func (m *migration) reconcileBatches(ctx context.Context, look func(id string) bool, inWindow map[string]bool) (int, error) {
	inflight, err := m.w.rdb.HGetAll(ctx, migrateBatchesKey(m.id)).Result()
	if err != nil {
		return 0, fmt.Errorf("migration window: %w", err)
	}
	ended := 0
	for id, nstr := range inflight {
		inWindow[id] = true
		if !look(id) {
			continue
		}
		n, _ := strconv.Atoi(nstr)
		ti, err := m.w.insp.GetTaskInfo(m.queue, id)
		takenOver := false
		if err == nil {
			ti, takenOver = m.w.endedByTakeover(ctx, ti)
		}
		var copied, failedN int
		var bytes int64
		var fails []any
		done := false
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			done, failedN = true, n
			fails = append(fails, id, fmt.Sprintf("the batch of %d objects disappeared from the queue before the migration saw it end (deleted by hand, or its retention expired): a re-run copies what the destination lacks", n))
		case err != nil:
			return ended, fmt.Errorf("inspect batch %s: %w", id, err)
		case ti.State == asynq.TaskStateCompleted || ti.State == asynq.TaskStateArchived:
			done = true
			copied, failedN, bytes, fails = m.batchCounts(ti, n)
		}
		if !done {
			continue
		}
		args := append([]any{id, copied, failedN, bytes, maxReportedFailures}, fails...)
		err = finishBatch.Run(ctx, m.w.rdb, []string{migrateBatchesKey(m.id), migrateKey(m.id), migrateFailuresKey(m.id)}, args...).Err()
		if err != nil {
			return ended, fmt.Errorf("count finished batch %s: %w", id, err)
		}
		ended++
		delete(inWindow, id)
		// The batch's end is recorded (by asynq, or by a takeover's done
		// mark that its own run of asynq reads): nothing writes its items
		// again, so its record of them (kept a while, see
		// batchRetiredTTL) goes now.
		m.w.rdb.Del(context.WithoutCancel(ctx), batchKey(id), batchBytesKey(id))
		if ti != nil && ti.State == asynq.TaskStateCompleted && !takenOver {
			// (A batch a takeover ended is still active in asynq until
			// its own run ends from the done mark: its retention removes
			// it then.)
			m.forgetChild(ctx, id)
		}
	}
	return ended, nil
}

// batchCounts reads a finished batch of n objects: objects copied and
// failed, bytes, and failed source keys with reasons (flattened pairs).
func (m *migration) batchCounts(ti *asynq.TaskInfo, n int) (copied, failedN int, bytes int64, fails []any) {
	var p tasks.BatchPayload
	_ = json.Unmarshal(ti.Payload, &p)
	srcKey := func(i int) string {
		if i < 0 || i >= len(p.Items) {
			return ti.ID
		}
		if raw, err := json.Marshal(p.Items[i]); err == nil {
			return m.childSourceKey(raw, ti.ID) // a local file's relative key, or the object's
		}
		return p.Items[i].Source.Key
	}
	var res tasks.BatchResult
	if json.Unmarshal(ti.Result, &res) != nil || res.Total == 0 {
		// Archived without a result (it failed before it ran its items):
		// none of them is known copied.
		reason := ti.LastErr
		if reason == "" {
			reason = "the batch failed without a result"
		}
		for i := range n {
			fails = append(fails, srcKey(i), reason)
		}
		return 0, n, 0, fails
	}
	for _, f := range res.Failures {
		fails = append(fails, srcKey(f.Item), f.Reason)
	}
	failedN = res.Failed + res.NotRun
	if res.NotRun > 0 && len(fails) < 2*tasks.MaxBatchFailures {
		fails = append(fails, ti.ID, fmt.Sprintf("%d objects of the batch were not run: it was cancelled", res.NotRun))
	}
	return res.Done, failedN, res.Bytes, fails
}

// forgetChild deletes a counted, completed task of the migration and its
// progress record.
func (m *migration) forgetChild(ctx context.Context, id string) {
	if err := m.w.insp.DeleteTask(m.queue, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
		m.log.Debug("could not delete a finished task of the migration (its retention removes it)", zap.String("child", id), zap.Error(err))
	}
	m.w.rdb.Del(context.WithoutCancel(ctx), tasks.ProgressKey(id))
}
