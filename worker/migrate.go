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
	// migratePoll is how often a migration whose window is full, or whose
	// listing is done, checks its copies when none of them wakes it (see
	// migrateWakeKey; tree uploads and takeovers do not).
	migratePoll = 250 * time.Millisecond
	// wakeSettle is how long a woken migration waits before it looks: a
	// child wakes it from its handler, just before asynq records the end.
	// A look that then counts nothing is repeated after twice the wait,
	// up to wakeRecheckMax, before the migration waits for the next wake
	// or poll. It was a fixed 25 ms, so that children ending together
	// were counted in one look; the last batch's end then cost every
	// migration 25 ms of about 30 between its last object and its report
	// (docs/performance.md, fifth round).
	wakeSettle = 2 * time.Millisecond
	// wakeRecheckMax bounds the repeated looks after one wake.
	wakeRecheckMax = 64 * time.Millisecond
	// wakeTTL bounds the life of a wake nobody took (its migration ended).
	wakeTTL = time.Minute
	// maxReportedFailures caps the failures kept for the report.
	maxReportedFailures = 1000
	// maxDryRunSample caps the keys a dry run lists in its report.
	maxDryRunSample = 1000
	// migrateStateTTL keeps a migration's Redis state alive while it runs
	// (refreshed) and after it ends.
	migrateStateTTL = 7 * 24 * time.Hour
)

// MigrateReport is the result of a migration, stored as the task result:
// tasks.MigrateReport, which producers, the CLI and the dashboard read.
type MigrateReport = tasks.MigrateReport

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
	w     *Worker
	id    string
	queue string
	p     tasks.MigratePayload
	// src is an S3 source; tree a local one (exactly one is set).
	src    *storage.S3
	tree   *tree
	walk   *walkState
	walks  int // walks of the tree started by this run
	dst    *storage.S3
	prog   *progress
	log    *zap.Logger
	sample []string
	// again counts the times this migration was run again after it finished
	// (asynqmon's "run" of the archived task); part of its copies' ids.
	again int64
	// recheck is the wait before the next look while the looks since a
	// wake counted no end (zero: wait for a wake).
	recheck time.Duration
	// named holds the children whose wakes named them and whose end no
	// look has counted yet; fullAt is when a look last inspected every
	// child of the window, and fullNext asks the next look to (see
	// reconcile).
	named    map[string]bool
	fullAt   time.Time
	fullNext bool
}

func (w *Worker) handleMigrate(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeMigrate(t)
	if err != nil {
		return err
	}
	return w.run(ctx, t, p.Source.String(), p.Dest.String(), func(ctx context.Context, id string, prog *progress) (any, error) {
		log := w.taskLog(ctx, t)
		// Owned (see takeover.go): a killed worker's migration is taken
		// over from its cursor within seconds; every cursor move is fenced.
		rep, err := runOwned(ctx, w, id, log, prog, func(ctx context.Context) (*MigrateReport, error) {
			var src *storage.S3
			var tr *tree
			var err error
			if p.Source.Kind() == tasks.KindFile {
				if tr, err = w.sources.openTree(p.Source.Path); err != nil {
					return nil, err
				}
				defer tr.Close()
			} else {
				if err := w.profiles.checkNoOverlap(p.Source, p.Dest); err != nil {
					return nil, err
				}
				if src, err = w.profiles.open(ctx, p.Source.Profile, p.Source.Bucket); err != nil {
					return nil, err
				}
			}
			dst, err := w.profiles.open(ctx, p.Dest.Profile, p.Dest.Bucket)
			if err != nil {
				return nil, err
			}
			m := &migration{w: w, id: id, queue: queueOf(ctx), p: p, src: src, tree: tr, dst: dst, prog: prog,
				log: log}
			defer func() { m.walk.close() }()
			rep, err := m.run(ctx)
			if err = cancelledErr(ctx, err); errors.Is(err, errCancelled) {
				// Its copies in the window stop too.
				m.cancelChildren(ctx)
			}
			return rep, err
		}, replay[*MigrateReport])
		if rep != nil && err != nil {
			// Failed copies: the task is archived, with its report as result.
			writeResult(t, rep)
		}
		if rep == nil {
			return nil, err
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

// run lists the source after the checkpointed cursor, a page at a time,
// enqueues batches (small objects) and copies or uploads (large ones) of
// the objects not already identical at the destination, and lists more
// only while the window has room for another task.
func (m *migration) run(ctx context.Context) (*MigrateReport, error) {
	rdb := m.w.rdb
	state := migrateKey(m.id)
	if err := rdb.Expire(ctx, state, migrateStateTTL).Err(); err != nil {
		return nil, fmt.Errorf("migration state: %w", err)
	}
	if rep, ok, err := m.replayFinished(ctx); ok {
		return rep, err
	}
	if err := m.startRun(ctx); err != nil {
		return nil, err
	}
	if err := m.recordStart(ctx); err != nil {
		return nil, err
	}
	// Tasks of a page committed before a crash, not yet enqueued.
	if err := m.flushOutbox(ctx); err != nil {
		return nil, err
	}
	for {
		if err := m.w.checkInterrupt(ctx, m.id); err != nil {
			return nil, err
		}
		ended, err := m.reconcile(ctx)
		if err != nil {
			return nil, err
		}
		if ended > 0 {
			m.recheck = 0 // the look after a wake counted its end
		}
		st, err := rdb.HGetAll(ctx, state).Result()
		if err != nil {
			return nil, fmt.Errorf("migration state: %w", err)
		}
		pending, err := m.pending(ctx)
		if err != nil {
			return nil, err
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
		if err := m.waitForChild(ctx); err != nil {
			return nil, err
		}
	}
	return m.finish(ctx)
}

// waitForChild returns when one of the migration's batches or copies has
// ended (it pushed its id to migrateWakeKey), or after migratePoll. The
// ids pushed meanwhile are taken too, for the look that follows.
// While the looks since a wake counted no end (asynq had not recorded it
// yet; run clears recheck when one does), the next look comes after a
// short, doubling wait instead.
func (m *migration) waitForChild(ctx context.Context) error {
	if m.recheck > 0 && m.recheck <= wakeRecheckMax {
		wait := m.recheck
		m.recheck *= 2
		return sleepCtx(ctx, wait)
	}
	m.recheck = 0
	key := migrateWakeKey(m.id)
	// Do, not BLPop: go-redis rounds a BLPop timeout up to whole seconds.
	got, err := m.w.rdb.Do(ctx, "BLPOP", key, strconv.FormatFloat(migratePoll.Seconds(), 'f', 3, 64)).StringSlice()
	wait := wakeSettle
	switch {
	case errors.Is(err, redis.Nil):
		m.fullNext = true
		return nil // polled: nothing woke it
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		// Redis cannot block here (before 6.0 BLPOP takes whole seconds
		// only) or is away: poll.
		m.fullNext = true
		wait = migratePoll
	default:
		var rest *redis.StringSliceCmd
		_, err := m.w.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			rest = p.LRange(ctx, key, 0, -1)
			p.Del(ctx, key)
			return nil
		})
		if err != nil {
			m.fullNext = true // the ids pushed meanwhile are lost to this look
		}
		m.name(append(got[1:], rest.Val()...)...)
		m.recheck = 2 * wakeSettle
	}
	return sleepCtx(ctx, wait)
}

// name notes children whose wakes named them, for the next look.
func (m *migration) name(ids ...string) {
	if m.named == nil {
		m.named = map[string]bool{}
	}
	for _, id := range ids {
		m.named[id] = true
	}
}

// sleepCtx waits d, or returns ctx's error when it ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// wakeMigration tells migration that its batch or copy child ended (see
// waitForChild). A failure only delays the count to a full look.
func (w *Worker) wakeMigration(ctx context.Context, migration, child string) {
	key := migrateWakeKey(migration)
	_, _ = w.rdb.Pipelined(context.WithoutCancel(ctx), func(p redis.Pipeliner) error {
		p.RPush(ctx, key, child)
		p.Expire(ctx, key, wakeTTL)
		return nil
	})
}

// verdict is what comparing one source object with the destination decided.
type verdict int

const (
	// copyIt: missing at the destination, or different there.
	copyIt verdict = iota
	// identical: the same bytes, headers and user metadata.
	identical
	// filtered: not selected by --include/--exclude.
	filtered
	// copiedAlready: identical because this migration copied it, before a
	// crash re-listed the object.
	copiedAlready
	// failed: this object cannot be migrated (reason says why); the rest
	// of the migration goes on.
	failed
	// ignored: a local tree's entry that is not a regular file (reason
	// says what it is): passed over, never followed.
	ignored
)

// decision is the verdict on one source object.
type decision struct {
	verdict verdict
	reason  string // failed
	// atDest: copyIt found an object at the destination key (listed or
	// HEADed). A folder marker the destination did not have is written only
	// if it is still absent (see copyMarker).
	atDest bool
}

// compareConcurrency bounds the HEADs one page of a listing sends at once.
const compareConcurrency = 16

// State fields of a migration's runs.
const (
	// stateFinished is set when a run built its report.
	stateFinished = "finished"
	// stateRun counts the runs after the first (see migration.again).
	stateRun = "run"
	// stateReport is the finished run's report and error (finishedRun).
	stateReport = "report"
)

// startRun starts afresh when the state is that of a finished run: the
// archived migration was run again (asynqmon's "run"), and the earlier
// run's cursor, counts and copy tasks prove nothing about the destination
// now. It decides from the listings again, with copy ids of its own. A
// retried or resumed run (not finished) continues from its cursor.
func (m *migration) startRun(ctx context.Context) error {
	st, err := m.w.rdb.HMGet(ctx, migrateKey(m.id), stateFinished, stateRun).Result()
	if err != nil {
		return fmt.Errorf("migration state: %w", err)
	}
	if s, ok := st[1].(string); ok {
		m.again, _ = strconv.ParseInt(s, 10, 64)
	}
	if st[0] == nil {
		return nil
	}
	m.again++
	_, err = m.w.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, migrateKey(m.id), migratePendingKey(m.id), migrateFailuresKey(m.id), migrateBatchesKey(m.id), migrateOutboxKey(m.id))
		p.HSet(ctx, migrateKey(m.id), stateRun, m.again)
		p.Expire(ctx, migrateKey(m.id), migrateStateTTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("migration state: %w", err)
	}
	if _, err := m.w.rdb.Del(ctx, migrateIgnoredKey(m.id)).Result(); err != nil {
		return fmt.Errorf("migration state: %w", err)
	}
	m.log.Info("a finished migration runs again: starting from the beginning", zap.Int64("run", m.again))
	return nil
}

// listPage lists a page of the source after cursor and the destination
// beside it (both listings are in key order), decides from the two
// listings what to copy, and commits the page with room tasks at most
// (handlePage). Only a source object whose destination counterpart has the
// same size and another ETag costs a HEAD (see decide): a new key, or one
// whose size changed, is decided by the listings alone.
func (m *migration) listPage(ctx context.Context, cursor string, room int) error {
	srcPrefix, dstPrefix := m.p.Source.Key, m.p.Dest.Key
	size := migratePage
	if cursor == "" {
		size = migrateFirstPage
	}
	entries, err := m.listSource(ctx, cursor, size)
	if err != nil {
		return err
	}
	objs := make([]storage.StoredFile, len(entries))
	want := map[string]bool{}
	for i, e := range entries {
		f := e.f
		objs[i] = f
		// rel is "" for the marker of the migrated directory itself: it
		// becomes the destination directory's marker, or, when that is the
		// bucket's root, nothing (filtered).
		if rel := strings.TrimPrefix(f.Key, srcPrefix); e.ignore == "" && e.fail == "" && m.p.Selects(rel) && (rel != "" || dstPrefix != "") {
			want[rel] = true
		}
	}
	if len(objs) == 0 {
		return m.w.rdb.HSet(ctx, migrateKey(m.id), "listing_done", "1").Err()
	}
	var afterRel string
	if cursor != "" {
		afterRel = strings.TrimPrefix(cursor, srcPrefix)
	}
	dsts, err := m.destinationPage(ctx, afterRel, strings.TrimPrefix(objs[len(objs)-1].Key, srcPrefix), want)
	if err != nil {
		return err
	}
	return m.handlePage(ctx, entries, dsts, want, room)
}

// destinationPage lists the destination beside a page of the source: the
// objects whose relative keys come after afterRel up to lastRel, keeping
// those with a selected source counterpart (want). Destination objects in
// between that the source lacks are passed over (--delete-extra finds
// them later, from two complete listings).
func (m *migration) destinationPage(ctx context.Context, afterRel, lastRel string, want map[string]bool) (map[string]storage.StoredFile, error) {
	dstPrefix := m.p.Dest.Key
	found := make(map[string]storage.StoredFile, len(want))
	if len(want) == 0 {
		return found, nil
	}
	after := ""
	if afterRel != "" {
		after = dstPrefix + afterRel
	}
	// Pages the size of the source's: usually the same keys are there.
	page := len(want) + 1
	for {
		got := 0
		for f, err := range m.dst.ListAfter(ctx, dstPrefix, after, page) {
			if err != nil {
				return nil, fmt.Errorf("list destination: %w", err)
			}
			rel := strings.TrimPrefix(f.Key, dstPrefix)
			if rel > lastRel {
				return found, nil
			}
			if want[rel] {
				found[rel] = f
			}
			got++
			after = f.Key
		}
		if got < page {
			return found, nil
		}
	}
}

// isMarker reports whether key names a folder marker: "dir/", as the AWS
// console and directory-marker tools create them.
func isMarker(key string) bool { return strings.HasSuffix(key, "/") }

// copyMarker writes the folder marker f (zero bytes, a key ending in "/")
// at dstKey with the source's headers and user metadata, and ferry's record
// of its source as on every copy. A marker is one small PUT, so it is done
// here rather than through a copy task, whose payload takes object keys
// only. A provider that refuses markers fails this object only.
//
// When the destination had no object at dstKey (atDest false), the PUT
// carries If-None-Match: *, so a marker written there since the listing is
// kept as its writer made it and this object is reported failed. A marker
// that was there is overwritten unconditionally: every marker's ETag is the
// MD5 of no bytes, so an If-Match could not tell a rewrite from the one
// listed.
func (m *migration) copyMarker(ctx context.Context, f storage.StoredFile, dstKey string, atDest bool) (decision, error) {
	s, err := m.src.Info(ctx, f.Key)
	if errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrBucketNotFound) {
		return decision{verdict: identical}, nil // deleted since listed: nothing to copy
	}
	if err != nil {
		return objectFailure("read the folder marker", err)
	}
	meta := mergeMeta(s.Metadata, copyMeta(m.childID(f, dstKey), s))
	if s.Size != 0 {
		return decision{verdict: failed, reason: fmt.Sprintf("%s ends in \"/\" like a folder marker but now holds %d bytes: ferry copies only empty markers", f.Key, s.Size)}, nil
	}
	_, err = m.dst.PutBytes(ctx, dstKey, nil, &storage.PutOptions{Headers: s.Headers, Metadata: meta, IfNotExists: !atDest})
	if !atDest && errors.Is(err, storage.ErrExists) {
		return decision{verdict: failed, reason: fmt.Sprintf("%s was written at the destination during the migration: left as it is", dstKey)}, nil
	}
	if err != nil {
		return objectFailure("write the folder marker", err)
	}
	return decision{verdict: copiedAlready}, nil
}

// compare decides about a source object f whose destination counterpart
// dstKey has the same size in the listings: the one case a listing cannot
// decide. It HEADs the destination: its bytes are the same when ferry
// recorded copying exactly this source ETag and size there, or both ETags
// are plain MD5s and agree. Only then does it HEAD the source as well, to
// compare headers and user metadata (a listing carries neither) and, when
// both sides record a CRC32C (ferry-crc32c), the CRC32Cs: an unchanged
// object costs two HEADs, a changed one at most one.
//
// An error that concerns this object alone (its key refused, permission
// denied on it) is a failed decision, reported with the object; any other
// is returned, and the migration retries.
func (m *migration) compare(ctx context.Context, f storage.StoredFile, dstKey string) (decision, error) {
	d, err := m.dst.Info(ctx, dstKey)
	if errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrBucketNotFound) {
		return decision{verdict: copyIt}, nil // deleted since listed
	}
	if err != nil {
		return objectFailure("compare with the destination", err)
	}
	if d.Size != f.Size {
		return decision{verdict: copyIt, atDest: true}, nil
	}
	recorded := d.Metadata[metaSourceETag] == f.ETag && d.Metadata[metaSourceSize] == strconv.FormatInt(f.Size, 10)
	// d's HEAD says whether its ETag is an MD5 (not KMS or SSE-C); f comes
	// from a listing, which cannot say, but a KMS ETag equal to an MD5 of
	// other bytes would be a collision. Anything unsure is copied again.
	if !recorded && !(f.ETagIsMD5() && d.ETagIsMD5() && d.ETag == f.ETag) {
		return decision{verdict: copyIt, atDest: true}, nil
	}
	s, err := m.src.Info(ctx, f.Key)
	if errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrBucketNotFound) {
		return decision{verdict: identical}, nil // deleted since listed; the destination has what was listed
	}
	if err != nil {
		return objectFailure("compare with the source", err)
	}
	switch {
	case s.ETag != f.ETag || !sameHeaders(s, d):
		return decision{verdict: copyIt, atDest: true}, nil
	case s.Checksum != "" && d.Checksum != "" && s.Checksum != d.Checksum:
		// Both record what their bytes are, and they differ: whatever
		// the ETags say, the bytes are not the same.
		return decision{verdict: copyIt, atDest: true}, nil
	case d.Metadata[metaTaskID] == m.childID(f, dstKey):
		return decision{verdict: copiedAlready}, nil
	}
	return decision{verdict: identical}, nil
}

// objectFailure classifies an error met comparing one object: permanent
// ones (the key refused, permission denied on it) fail that object only;
// a missing bucket and transient errors are returned.
func objectFailure(what string, err error) (decision, error) {
	err = fmt.Errorf("%s: %w", what, err)
	if storage.IsPermanent(err) && !errors.Is(err, storage.ErrBucketNotFound) {
		return decision{verdict: failed, reason: err.Error()}, nil
	}
	return decision{}, err
}

// childID is the copy task's id: within one migration the same source
// version to the same destination always gets the same id, so a resumed
// listing enqueues nothing twice. The migration's own id is part of it: an
// earlier migration's finished copy of the same object proves nothing about
// the destination now (it may have been deleted or changed since, or the
// source reverted to that version), so a re-run never shares an id with it.
func (m *migration) childID(f storage.StoredFile, dstKey string) string {
	parts := []string{m.runID(), m.p.Source.Profile, m.p.Source.Bucket, f.Key, f.ETag, m.p.Dest.Profile, m.p.Dest.Bucket, dstKey}
	if m.tree != nil {
		// A local tree's entries have no bucket: the directory tells
		// two trees apart (f.ETag is the file's size and mtime).
		parts = append(parts, m.tree.dir)
	}
	return hashID("ferry-mig-", parts...)
}

// hashID is prefix and 24 hex digits of a SHA-256 over parts, each ended by
// a NUL: the ids of a migration's copies and batches. They are kept in
// Redis and in the metadata of the objects copied, so their bytes never
// change (tasks.TaskID, the producers' idempotent ids, hashes its own
// fields its own way for the same reason).
func hashID(prefix string, parts ...string) string {
	h := sha256.New()
	for _, s := range parts {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return prefix + hex.EncodeToString(h.Sum(nil))[:24]
}

// runID names this run of the migration: its id, and after a run again
// (see again) the run's number.
func (m *migration) runID() string {
	if m.again > 0 {
		return m.id + "/" + strconv.FormatInt(m.again, 10)
	}
	return m.id
}

// copyTask builds the copy of f to dstKey and returns it with its id. An
// error (the destination key is refused: too long under the destination
// prefix) concerns this object only.
func (m *migration) copyTask(f storage.StoredFile, dstKey string) (*asynq.Task, string, error) {
	cid := m.childID(f, dstKey)
	task, err := tasks.NewCopyTask(tasks.CopyPayload{
		Source:   tasks.Location{Profile: m.p.Source.Profile, Bucket: m.p.Source.Bucket, Key: f.Key},
		Dest:     m.destAt(dstKey),
		PartSize: m.childPartSize(f.Size), PartConcurrency: m.p.PartConcurrency, Size: f.Size, Migration: m.id},
		asynq.TaskID(cid), asynq.Queue(m.queue))
	if err != nil {
		return nil, "", fmt.Errorf("copy to %s: %w", dstKey, err)
	}
	return task, cid, nil
}

// childPartSize is the part size of the child task of an object of size
// bytes: 0 (the worker's default) when the migration sets none. The
// migration's part_size is one preference for a whole tree: raised for an
// object it would split into more than 10,000 parts (as the worker would),
// instead of a child refused at enqueue.
func (m *migration) childPartSize(size int64) int64 {
	if m.p.PartSize <= 0 {
		return m.p.PartSize
	}
	return storage.PartSizeFor(size, m.p.PartSize)
}

// destAt is the destination object dstKey (a full key, prefix included).
func (m *migration) destAt(dstKey string) tasks.Location {
	return tasks.Location{Profile: m.p.Dest.Profile, Bucket: m.p.Dest.Bucket, Key: dstKey}
}

// reconcile moves finished batches and copies out of the window, counts
// them, and deletes the completed ones. It returns how many it moved.
//
// A look inspects (asynq's GetTaskInfo, which returns a batch's whole
// payload) only the children a wake named since the last, unless it is
// the first, follows a poll no wake ended, or comes migratePoll after the
// last full look: then every child of the window, for the children that
// wake nobody (a local tree's uploads, takeovers) and wakes lost. Every
// look inspecting every child cost a bucket-to-bucket migration about a
// tenth of its own process's CPU (docs/performance.md, fifth round).
func (m *migration) reconcile(ctx context.Context) (int, error) {
	full := m.fullNext || time.Since(m.fullAt) >= migratePoll
	if !full && len(m.named) == 0 {
		return 0, nil
	}
	if full {
		m.fullAt, m.fullNext = time.Now(), false
	}
	look := func(id string) bool { return full || m.named[id] }
	inWindow := map[string]bool{}
	ended, err := m.reconcileBatches(ctx, look, inWindow)
	if err != nil {
		return ended, err
	}
	ids, err := m.w.rdb.SMembers(ctx, migratePendingKey(m.id)).Result()
	if err != nil {
		return ended, fmt.Errorf("migration window: %w", err)
	}
	defer func() {
		// Named children counted, or not in the window (counted by an
		// earlier look, or an older worker's wake): not looked at again.
		for id := range m.named {
			if !inWindow[id] {
				delete(m.named, id)
			}
		}
	}()
	for _, cid := range ids {
		inWindow[cid] = true
		if !look(cid) {
			continue
		}
		ti, err := m.w.insp.GetTaskInfo(m.queue, cid)
		takenOver := false
		if err == nil {
			ti, takenOver = m.w.endedByTakeover(ctx, ti)
		}
		field, bytes, fkey, reason := "", int64(0), "", ""
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			// Deleted by hand, or its retention ran out while no worker
			// ran this migration: nothing says it copied anything.
			field, fkey = "failed", cid
			reason = "the copy task disappeared from the queue before the migration saw it end (deleted by hand, or its retention expired): a re-run copies the object if the destination lacks it"
		case err != nil:
			return ended, fmt.Errorf("inspect copy %s: %w", cid, err)
		case ti.State == asynq.TaskStateCompleted:
			field = "copied"
			var f storage.StoredFile
			if json.Unmarshal(ti.Result, &f) == nil {
				bytes = f.Size
			}
		case ti.State == asynq.TaskStateArchived:
			field, reason = "failed", ti.LastErr
			fkey = m.childSourceKey(ti.Payload, cid)
		default:
			continue
		}
		err = finishChild.Run(ctx, m.w.rdb, []string{migratePendingKey(m.id), migrateKey(m.id), migrateFailuresKey(m.id)},
			cid, field, bytes, fkey, reason, maxReportedFailures).Err()
		if err != nil {
			return ended, fmt.Errorf("count finished copy %s: %w", cid, err)
		}
		ended++
		delete(inWindow, cid)
		if ti != nil && ti.State == asynq.TaskStateCompleted && !takenOver {
			m.forgetChild(ctx, cid)
		}
	}
	return ended, nil
}

// cancelChildren cancels the batches and copies still in the window. ctx
// may be the migration's, ended by the cancel.
func (m *migration) cancelChildren(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	ids, err := m.w.rdb.SMembers(ctx, migratePendingKey(m.id)).Result()
	if err != nil {
		m.log.Warn("cancelled migration: could not read its copies to cancel them", zap.Error(err))
	}
	batches, err := m.w.rdb.HKeys(ctx, migrateBatchesKey(m.id)).Result()
	if err != nil {
		m.log.Warn("cancelled migration: could not read its batches to cancel them", zap.Error(err))
	}
	ids = append(ids, batches...)
	for _, cid := range ids {
		if err := m.w.client.Cancel(ctx, cid); err != nil && !errors.Is(err, tasks.ErrFinished) {
			m.log.Warn("cancelled migration: could not cancel one of its copies", zap.String("copy", cid), zap.Error(err))
		}
	}
}

// counterFields are the state fields published as the migration's
// counters; listing_done is 1 once the source is listed to its end (the
// ETA readers compute needs the total).
var counterFields = []string{"listed", "copied", "skipped", "failed", "bytes", "deleted", "would_copy", "filtered", "ignored", "listing_done"}

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
	for k, v := range st {
		if reason, ok := strings.CutPrefix(k, stateIgnoredPrefix); ok {
			if rep.Ignored == nil {
				rep.Ignored = map[string]int64{}
			}
			rep.Ignored[reason], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if c["ignored"] > 0 {
		rep.IgnoredSample, _ = m.w.rdb.HGetAll(ctx, migrateIgnoredKey(m.id)).Result()
	}
	var skipped error
	switch {
	case !m.p.DeleteExtra:
	case rep.Failed > 0:
		rep.DeleteSkipped = fmt.Sprintf("%d objects failed: nothing deleted at the destination", rep.Failed)
	case st["delete_done"] != "1":
		skipped = m.deleteExtras(ctx, st, rep)
		if skipped != nil && !errors.Is(skipped, errDeleteSkipped) {
			return nil, skipped // a transient failure: the retry lists again
		}
		if skipped == nil && !m.p.DryRun {
			_ = m.w.fenced(ctx, m.id, func(p redis.Pipeliner) error {
				return p.HSet(ctx, migrateKey(m.id), "delete_done", "1").Err()
			})
		}
		rep.Deleted, _ = m.w.rdb.HGet(ctx, migrateKey(m.id), "deleted").Int64()
		rep.KeptChanged, _ = m.w.rdb.HGet(ctx, migrateKey(m.id), stateKeptChanged).Int64()
	}
	var runErr error
	switch {
	case rep.Failed > 0:
		runErr = permanent(fmt.Errorf("migration finished with %d objects failed, each named with its reason in the report (ferry status %s --json); the rest is done, and a re-run retries only those", rep.Failed, m.id))
	case skipped != nil:
		runErr = permanent(fmt.Errorf("%w: %s", skipped, rep.DeleteSkipped))
	}
	end := finishedRun{Report: rep, Ignored: c["ignored"]}
	if runErr != nil {
		end.Error = runErr.Error()
	}
	rec, err := json.Marshal(end)
	if err != nil {
		return nil, fmt.Errorf("migration report: %w", err)
	}
	// The report goes with the mark: a takeover of a run killed after
	// this ends the task with it (replayFinished).
	if err := m.w.fenced(ctx, m.id, func(p redis.Pipeliner) error {
		return p.HSet(ctx, migrateKey(m.id), stateFinished, "1", stateReport, rec).Err()
	}); err != nil {
		return nil, fmt.Errorf("migration state: %w", err)
	}
	return m.ended(ctx, end, runErr)
}

// finishedRun is what a run that finished records with its mark
// (stateReport): its report, the local tree entries it passed over, and
// the final error it returned, if any.
type finishedRun struct {
	Report  *MigrateReport `json:"report"`
	Ignored int64          `json:"ignored,omitempty"`
	Error   string         `json:"error,omitempty"`
}

// ended publishes a finished run's final counters, lets its state expire
// with its progress, and returns its report and error.
func (m *migration) ended(ctx context.Context, end finishedRun, runErr error) (*MigrateReport, error) {
	rep := end.Report
	m.prog.counters(ctx, map[string]int64{"listed": rep.Listed, "copied": rep.Copied, "skipped": rep.Skipped,
		"failed": rep.Failed, "bytes": rep.Bytes, "deleted": rep.Deleted, "would_copy": rep.WouldCopy, "ignored": end.Ignored, "pending": 0}, true)
	for _, k := range []string{migrateKey(m.id), migratePendingKey(m.id), migrateFailuresKey(m.id), migrateIgnoredKey(m.id),
		migrateBatchesKey(m.id), migrateOutboxKey(m.id)} {
		m.w.rdb.Expire(ctx, k, m.w.cfg.ProgressTTL)
	}
	m.w.rdb.Del(ctx, migrateWakeKey(m.id))
	m.log.Info("migration done", zap.Int64("listed", rep.Listed), zap.Int64("copied", rep.Copied),
		zap.Int64("skipped", rep.Skipped), zap.Int64("failed", rep.Failed), zap.Int64("deleted", rep.Deleted), zap.Int64("ignored", end.Ignored),
		zap.String("delete_skipped", rep.DeleteSkipped))
	return rep, runErr
}

// replayFinished ends a takeover of a migration whose last run finished
// (its report is recorded with the finished mark) but was killed before it
// ended the task (asynq completing it, or a takeover's done mark): with
// that run's report and error, instead of starting afresh as a run again
// does (startRun), which would find every object identical and report
// none copied. A takeover is never a run again: it continues a task asynq
// still shows active. ok is false when there is nothing to replay.
func (m *migration) replayFinished(ctx context.Context) (rep *MigrateReport, ok bool, err error) {
	if c := claimFrom(ctx); c == nil || !c.takeover {
		return nil, false, nil
	}
	st, err := m.w.rdb.HMGet(ctx, migrateKey(m.id), stateFinished, stateReport).Result()
	if err != nil {
		return nil, true, fmt.Errorf("migration state: %w", err)
	}
	raw, _ := st[1].(string)
	if st[0] == nil || raw == "" {
		return nil, false, nil
	}
	var end finishedRun
	if err := json.Unmarshal([]byte(raw), &end); err != nil || end.Report == nil {
		return nil, false, nil // unreadable: start afresh
	}
	m.log.Info("the migration's last run finished and was stopped before it ended the task: ending it with that run's report")
	var runErr error
	if end.Error != "" {
		runErr = permanent(errors.New(end.Error))
	}
	rep, err = m.ended(ctx, end, runErr)
	return rep, true, err
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
