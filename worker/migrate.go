package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// Migration tuning.
const (
	defaultMigrateWindow = 64
	// migratePoll is how often a migration whose window is full checks its
	// copies.
	migratePoll = 250 * time.Millisecond
	// maxReportedFailures caps the failures kept for the report.
	maxReportedFailures = 1000
	// maxDryRunSample caps the keys a dry run lists in its report.
	maxDryRunSample = 1000
	// migrateStateTTL keeps a migration's Redis state alive while it runs
	// (refreshed) and after it ends.
	migrateStateTTL = 7 * 24 * time.Hour
)

// MigrateReport is the result of a migration, stored as the task result.
type MigrateReport struct {
	Source    string            `json:"source"`
	Dest      string            `json:"dest"`
	DryRun    bool              `json:"dry_run,omitempty"`
	Listed    int64             `json:"listed"`
	Copied    int64             `json:"copied"`
	Skipped   int64             `json:"skipped"`
	Failed    int64             `json:"failed"`
	Bytes     int64             `json:"bytes"`
	Deleted   int64             `json:"deleted"`
	WouldCopy int64             `json:"would_copy,omitempty"`
	Failures  map[string]string `json:"failures,omitempty"`
	// Sample lists keys a dry run would copy (at most 1000).
	Sample []string `json:"sample,omitempty"`
	// WouldDelete counts the destination objects a dry run with
	// --delete-extra would delete; DeleteSample lists them (at most 1000).
	WouldDelete  int64    `json:"would_delete,omitempty"`
	DeleteSample []string `json:"delete_sample,omitempty"`
	// KeptRecent counts destination objects missing at the source that
	// --delete-extra kept because they were modified after the migration
	// started.
	KeptRecent int64 `json:"kept_recent,omitempty"`
	// DeleteSkipped says why --delete-extra did not run.
	DeleteSkipped string `json:"delete_skipped,omitempty"`
}

// finishChild moves a finished copy out of the pending window and counts it
// once, however often reconciliation sees it.
//
// KEYS[1] pending set, KEYS[2] state hash, KEYS[3] failures hash
// ARGV[1] child id, ARGV[2] counter field (copied|failed), ARGV[3] bytes,
// ARGV[4] failure key ("" for none), ARGV[5] failure reason, ARGV[6] failure cap
var finishChild = redis.NewScript(`
if redis.call("SREM", KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call("HINCRBY", KEYS[2], ARGV[2], 1)
redis.call("HINCRBY", KEYS[2], "bytes", ARGV[3])
if ARGV[4] ~= "" and redis.call("HLEN", KEYS[3]) < tonumber(ARGV[6]) then
  redis.call("HSET", KEYS[3], ARGV[4], ARGV[5])
end
return 1`)

// migration is one run of a ferry:migrate task.
type migration struct {
	w      *Worker
	id     string
	queue  string
	p      tasks.MigratePayload
	src    *storage.S3
	dst    *storage.S3
	prog   *progress
	log    *zap.Logger
	client *asynq.Client
	sample []string
}

func (w *Worker) handleMigrate(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeMigrate(t)
	if err != nil {
		return err
	}
	return w.run(ctx, t, p.Source.String(), p.Dest.String(), func(ctx context.Context, id string, prog *progress) (any, error) {
		if err := w.profiles.checkNoOverlap(p.Source, p.Dest); err != nil {
			return nil, err
		}
		src, err := w.profiles.open(ctx, p.Source.Profile, p.Source.Bucket)
		if err != nil {
			return nil, err
		}
		dst, err := w.profiles.open(ctx, p.Dest.Profile, p.Dest.Bucket)
		if err != nil {
			return nil, err
		}
		q, _ := asynq.GetQueueName(ctx)
		m := &migration{w: w, id: id, queue: q, p: p, src: src, dst: dst, prog: prog,
			log: w.taskLog(ctx, t), client: asynq.NewClientFromRedisClient(w.rdb)}
		rep, err := m.run(ctx)
		if rep != nil && err != nil {
			// Failed copies: the task is archived, with its report as result.
			writeResult(t, rep)
		}
		if errors.Is(err, errShuttingDown) {
			// Like an upload: keep running until asynq requeues the task,
			// which then resumes from the cursor without counting a retry.
			<-ctx.Done()
		}
		return rep, err
	})
}

func (m *migration) window() int64 {
	if m.p.Window > 0 {
		return int64(m.p.Window)
	}
	return defaultMigrateWindow
}

// run lists the source after the checkpointed cursor, a window at a time,
// enqueues a copy for each object not already identical at the destination,
// and waits for the window to drain before listing more.
func (m *migration) run(ctx context.Context) (*MigrateReport, error) {
	rdb := m.w.rdb
	state := migrateKey(m.id)
	if err := rdb.Expire(ctx, state, migrateStateTTL).Err(); err != nil {
		return nil, fmt.Errorf("migration state: %w", err)
	}
	if err := m.recordStart(ctx); err != nil {
		return nil, err
	}
	for {
		if err := m.w.checkInterrupt(ctx, m.id); err != nil {
			if errors.Is(err, errCancelled) {
				m.cancelChildren(ctx)
			}
			return nil, err
		}
		if err := m.reconcile(ctx); err != nil {
			return nil, err
		}
		st, err := rdb.HGetAll(ctx, state).Result()
		if err != nil {
			return nil, fmt.Errorf("migration state: %w", err)
		}
		pending, err := rdb.SCard(ctx, migratePendingKey(m.id)).Result()
		if err != nil {
			return nil, fmt.Errorf("migration state: %w", err)
		}
		m.publish(ctx, st, pending)
		listingDone := st["listing_done"] == "1"
		if listingDone && pending == 0 {
			break
		}
		if !listingDone && pending < m.window() {
			if err := m.listPage(ctx, st["cursor"], int(m.window()-pending)); err != nil {
				return nil, err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(migratePoll):
		}
	}
	return m.finish(ctx)
}

// listPage lists up to n objects after cursor and handles each in key order,
// checkpointing the cursor after every object.
func (m *migration) listPage(ctx context.Context, cursor string, n int) error {
	srcPrefix := m.p.Source.Key
	var objs []storage.StoredFile
	for f, err := range m.src.ListAfter(ctx, srcPrefix, cursor, max(n, 1)) {
		if err != nil {
			return fmt.Errorf("list source: %w", err)
		}
		objs = append(objs, f)
	}
	if len(objs) == 0 {
		return m.w.rdb.HSet(ctx, migrateKey(m.id), "listing_done", "1").Err()
	}
	// Compare with the destination concurrently; act in key order.
	decisions := make([]bool, len(objs)) // true: copy
	errs := make([]error, len(objs))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, f := range objs {
		rel := strings.TrimPrefix(f.Key, srcPrefix)
		if !m.p.Selects(rel) {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			decisions[i], errs[i] = m.needsCopy(ctx, f, m.p.Dest.Key+rel)
		})
	}
	wg.Wait()
	for i, f := range objs {
		if errs[i] != nil {
			return errs[i]
		}
		rel := strings.TrimPrefix(f.Key, srcPrefix)
		field, pending := "listed", ""
		var err error
		switch {
		case !m.p.Selects(rel):
			field = "filtered"
		case !decisions[i]:
			field = "skipped"
		case m.p.DryRun:
			field = "would_copy"
			if len(m.sample) < maxDryRunSample {
				m.sample = append(m.sample, f.Key)
			}
		default:
			if pending, err = m.enqueueCopy(ctx, f, m.p.Dest.Key+rel); err != nil {
				return err
			}
		}
		// The copy joins the window in the same transaction that moves the
		// cursor past its object, so each object is counted once: a crash
		// before it re-lists the object, which then finds the copy done
		// (skipped) or enqueued (a conflict, then into the window here).
		_, err = m.w.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if pending != "" {
				p.SAdd(ctx, migratePendingKey(m.id), pending)
			}
			p.HSet(ctx, migrateKey(m.id), "cursor", f.Key)
			p.HIncrBy(ctx, migrateKey(m.id), "listed", 1)
			if field != "listed" {
				p.HIncrBy(ctx, migrateKey(m.id), field, 1)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("checkpoint migration cursor: %w", err)
		}
	}
	return nil
}

// needsCopy reports whether dstKey differs from the source object f. It is
// identical when it has the same bytes — ferry recorded copying exactly this
// source ETag and size there, or both ETags are plain MD5s and agree — and
// the same headers and user metadata as the source. A listing carries no
// headers, so only a destination with the same bytes costs a HEAD of the
// source as well.
func (m *migration) needsCopy(ctx context.Context, f storage.StoredFile, dstKey string) (bool, error) {
	d, err := m.dst.Info(ctx, dstKey)
	if errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrBucketNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("compare with destination: %w", err)
	}
	if d.Size != f.Size {
		return true, nil
	}
	recorded := d.Metadata[metaSourceETag] == f.ETag && d.Metadata[metaSourceSize] == strconv.FormatInt(f.Size, 10)
	// d's HEAD says whether its ETag is an MD5 (not KMS or SSE-C); f comes
	// from a listing, which cannot say, but a KMS ETag equal to an MD5 of
	// other bytes would be a collision. Anything unsure is copied again.
	if !recorded && !(f.ETagIsMD5() && d.ETagIsMD5() && d.ETag == f.ETag) {
		return true, nil
	}
	s, err := m.src.Info(ctx, f.Key)
	if errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrBucketNotFound) {
		return false, nil // deleted since listed; the destination has what was listed
	}
	if err != nil {
		return false, fmt.Errorf("compare with source: %w", err)
	}
	return s.ETag != f.ETag || !sameHeaders(s, d), nil
}

// childID is the copy task's id: the same source version to the same
// destination always gets the same id, so a re-run or a resumed listing
// enqueues nothing twice, while a changed source (new ETag) copies again.
func (m *migration) childID(f storage.StoredFile, dstKey string) string {
	h := sha256.New()
	for _, s := range []string{m.p.Source.Profile, m.p.Source.Bucket, f.Key, f.ETag, m.p.Dest.Profile, m.p.Dest.Bucket, dstKey} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "ferry-mig-" + hex.EncodeToString(h.Sum(nil))[:24]
}

// enqueueCopy enqueues the copy of f (or finds it enqueued) and returns its
// task id, for the caller to add to the window.
func (m *migration) enqueueCopy(ctx context.Context, f storage.StoredFile, dstKey string) (string, error) {
	cid := m.childID(f, dstKey)
	partSize := m.p.PartSize
	if partSize > 0 {
		// The migration's part_size is one preference for a whole tree:
		// raised for an object it would split into more than 10,000 parts
		// (as the worker would), instead of a copy refused at enqueue.
		partSize = storage.PartSizeFor(f.Size, partSize)
	}
	task, err := tasks.NewCopyTask(tasks.CopyPayload{
		Source:   tasks.Location{Profile: m.p.Source.Profile, Bucket: m.p.Source.Bucket, Key: f.Key},
		Dest:     tasks.Location{Profile: m.p.Dest.Profile, Bucket: m.p.Dest.Bucket, Key: dstKey},
		PartSize: partSize, PartConcurrency: m.p.PartConcurrency, Size: f.Size, Migration: m.id},
		asynq.TaskID(cid), asynq.Queue(m.queue))
	if err != nil {
		return "", permanent(fmt.Errorf("copy task for %s: %w", f.Key, err))
	}
	_, err = m.client.EnqueueContext(ctx, task)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		err = m.retryArchived(ctx, cid, task)
	}
	if err != nil {
		return "", fmt.Errorf("enqueue copy of %s: %w", f.Key, err)
	}
	return cid, nil
}

// retryArchived handles a copy id that exists already: one pending or
// running (this migration's, before a crash) is left alone; one an earlier
// migration left archived (failed or cancelled) is replaced by a fresh
// task, so re-running a migration retries its failures.
func (m *migration) retryArchived(ctx context.Context, cid string, task *asynq.Task) error {
	ti, err := m.w.insp.GetTaskInfo(m.queue, cid)
	if err != nil || ti.State != asynq.TaskStateArchived {
		return nil // gone meanwhile, or still to run: reconcile counts it
	}
	var cp tasks.CopyPayload
	if json.Unmarshal(ti.Payload, &cp) == nil && cp.Migration == m.id {
		return nil // this migration's own failure: reconcile counts it
	}
	if err := m.w.insp.DeleteTask(m.queue, cid); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
		return fmt.Errorf("replace archived copy %s: %w", cid, err)
	}
	// A cancel flag of the old run would cancel the new one.
	if err := m.w.rdb.Del(ctx, tasks.CancelKey(cid)).Err(); err != nil {
		return err
	}
	if _, err := m.client.EnqueueContext(ctx, task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return err
	}
	return nil
}

// reconcile moves finished copies out of the window and counts them.
func (m *migration) reconcile(ctx context.Context) error {
	ids, err := m.w.rdb.SMembers(ctx, migratePendingKey(m.id)).Result()
	if err != nil {
		return fmt.Errorf("migration window: %w", err)
	}
	for _, cid := range ids {
		ti, err := m.w.insp.GetTaskInfo(m.queue, cid)
		field, bytes, fkey, reason := "", int64(0), "", ""
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			// Retention expired before we looked: it completed long ago.
			field = "copied"
		case err != nil:
			return fmt.Errorf("inspect copy %s: %w", cid, err)
		case ti.State == asynq.TaskStateCompleted:
			field = "copied"
			var f storage.StoredFile
			if json.Unmarshal(ti.Result, &f) == nil {
				bytes = f.Size
			}
		case ti.State == asynq.TaskStateArchived:
			field, reason = "failed", ti.LastErr
			var cp tasks.CopyPayload
			if json.Unmarshal(ti.Payload, &cp) == nil {
				fkey = cp.Source.Key
			} else {
				fkey = cid
			}
		default:
			continue
		}
		err = finishChild.Run(ctx, m.w.rdb, []string{migratePendingKey(m.id), migrateKey(m.id), migrateFailuresKey(m.id)},
			cid, field, bytes, fkey, reason, maxReportedFailures).Err()
		if err != nil {
			return fmt.Errorf("count finished copy %s: %w", cid, err)
		}
	}
	return nil
}

// cancelChildren cancels the copies still in the window.
func (m *migration) cancelChildren(ctx context.Context) {
	ids, _ := m.w.rdb.SMembers(ctx, migratePendingKey(m.id)).Result()
	c := tasks.NewClient(m.w.rdb)
	for _, cid := range ids {
		_ = c.Cancel(context.WithoutCancel(ctx), cid)
	}
}

var counterFields = []string{"listed", "copied", "skipped", "failed", "bytes", "deleted", "would_copy", "filtered"}

func counters(st map[string]string, pending int64) map[string]int64 {
	c := map[string]int64{"pending": pending}
	for _, f := range counterFields {
		n, _ := strconv.ParseInt(st[f], 10, 64)
		c[f] = n
	}
	return c
}

func (m *migration) publish(ctx context.Context, st map[string]string, pending int64) {
	c := counters(st, pending)
	m.prog.setBytes(c["bytes"])
	m.prog.counters(ctx, c, false)
}

// finish deletes extras when asked and every copy succeeded, and builds the
// report.
func (m *migration) finish(ctx context.Context) (*MigrateReport, error) {
	st, err := m.w.rdb.HGetAll(ctx, migrateKey(m.id)).Result()
	if err != nil {
		return nil, fmt.Errorf("migration state: %w", err)
	}
	c := counters(st, 0)
	rep := &MigrateReport{Source: m.p.Source.String(), Dest: m.p.Dest.String(), DryRun: m.p.DryRun,
		Listed: c["listed"], Copied: c["copied"], Skipped: c["skipped"], Failed: c["failed"], Bytes: c["bytes"],
		Deleted: c["deleted"], WouldCopy: c["would_copy"], Sample: m.sample}
	if rep.Failed > 0 {
		rep.Failures, _ = m.w.rdb.HGetAll(ctx, migrateFailuresKey(m.id)).Result()
	}
	var skipped error
	switch {
	case !m.p.DeleteExtra:
	case rep.Failed > 0:
		rep.DeleteSkipped = fmt.Sprintf("%d copies failed: nothing deleted at the destination", rep.Failed)
	case st["delete_done"] != "1":
		skipped = m.deleteExtras(ctx, st, rep)
		if skipped != nil && !errors.Is(skipped, errDeleteSkipped) {
			return nil, skipped // a transient failure: the retry lists again
		}
		if skipped == nil && !m.p.DryRun {
			m.w.rdb.HSet(ctx, migrateKey(m.id), "delete_done", "1")
		}
		rep.Deleted, _ = m.w.rdb.HGet(ctx, migrateKey(m.id), "deleted").Int64()
	}
	m.prog.counters(ctx, map[string]int64{"listed": rep.Listed, "copied": rep.Copied, "skipped": rep.Skipped,
		"failed": rep.Failed, "bytes": rep.Bytes, "deleted": rep.Deleted, "would_copy": rep.WouldCopy, "pending": 0}, true)
	for _, k := range []string{migrateKey(m.id), migratePendingKey(m.id), migrateFailuresKey(m.id)} {
		m.w.rdb.Expire(ctx, k, m.w.cfg.ProgressTTL)
	}
	m.log.Info("migration done", zap.Int64("listed", rep.Listed), zap.Int64("copied", rep.Copied),
		zap.Int64("skipped", rep.Skipped), zap.Int64("failed", rep.Failed), zap.Int64("deleted", rep.Deleted),
		zap.String("delete_skipped", rep.DeleteSkipped))
	if rep.Failed > 0 {
		return rep, permanent(fmt.Errorf("migration finished with %d failed copies (see the report: ferry status %s --json)", rep.Failed, m.id))
	}
	if skipped != nil {
		return rep, permanent(fmt.Errorf("%w: %s", skipped, rep.DeleteSkipped))
	}
	return rep, nil
}

// migrationBackoff holds a copy of a migration back while the migration is
// throttled, and records throttling for its siblings.
func (w *Worker) migrationBackoff(ctx context.Context, migration string) error {
	if migration == "" {
		return nil
	}
	d, err := w.rdb.PTTL(ctx, migrateBackoffKey(migration)).Result()
	if err != nil || d <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(min(d, 30*time.Second)):
	}
	return nil
}

// throttled doubles the migration's shared backoff (1s..60s).
func (w *Worker) throttled(ctx context.Context, migration string) {
	if migration == "" {
		return
	}
	key := migrateBackoffKey(migration)
	cur, _ := w.rdb.PTTL(ctx, key).Result()
	next := min(max(2*cur, time.Second), time.Minute)
	w.rdb.Set(context.WithoutCancel(ctx), key, "1", next)
}
