package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// run wraps a handler body with what every transfer needs: the task id,
// progress, the result, and error classification. A cancel ends ctx
// (cancellable), and is checked between parts too (checkInterrupt):
// tasks.Client.Cancel archives a task that has not started yet, so
// checking the flag up front as well would cost every small object a Redis
// round trip for a narrow race.
func (w *Worker) run(ctx context.Context, t *asynq.Task, src, dst string, body func(context.Context, string, *progress) (any, error)) error {
	id := taskIDOf(ctx)
	prog := w.newProgress(ctx, id, t.Type(), src, dst)
	defer prog.close()
	res, err := body(ctx, id, prog)
	if err != nil {
		err = classify(cancelledErr(ctx, err))
		state, ok := w.failedState(ctx, err)
		if !ok {
			return err
		}
		recordEnd(ctx, nil, prog.fail(ctx, state, err))
		return reported{err}
	}
	writeResult(t, res)
	recordEnd(ctx, res, prog.finish(ctx))
	return nil
}

// reported marks an error whose state the run already published, so that
// onError does not publish it again. It is transparent to errors.Is.
type reported struct{ error }

func (r reported) Unwrap() error { return r.error }

// failedState is the state a run that failed with err leaves its task in,
// and false when the run publishes none: asynq requeues a task interrupted
// by shutdown without counting a retry (the next run reports on) — also on
// its last attempt, so shutdown is checked first — and a takeover run
// (outside asynq, whose own run of the task goes on) reports only a
// permanent failure.
func (w *Worker) failedState(ctx context.Context, err error) (tasks.State, bool) {
	_, asynqRun := asynq.GetTaskID(ctx)
	switch {
	case errors.Is(err, errCancelled):
		return tasks.StateCancelled, true
	case errors.Is(err, asynq.SkipRetry):
		return tasks.StateFailed, true
	case errors.Is(err, errShuttingDown) || (w.stopping.Load() && errors.Is(err, context.Canceled)):
		// Stopped at a boundary, or cut off when asynq's shutdown timeout
		// requeued the task and cancelled its context.
		return "", false
	case asynqRun && lastAttempt(ctx):
		return tasks.StateFailed, true
	case !asynqRun || errors.Is(err, context.Canceled):
		return "", false
	}
	return tasks.StateRetrying, true
}

func (w *Worker) taskLog(ctx context.Context, t *asynq.Task) *zap.Logger {
	id := taskIDOf(ctx)
	return w.log.With(zap.String("task_id", id), zap.String("task_type", t.Type()))
}

// withTaskID is meta plus ferry's task id record, in a new map.
func withTaskID(meta map[string]string, id string) map[string]string {
	return mergeMeta(meta, map[string]string{metaTaskID: id})
}

func (w *Worker) handlePut(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodePut(t)
	if err != nil {
		return err
	}
	if p.Source.Kind() == tasks.KindS3 {
		return w.copyTask(ctx, t, copySpec{Source: p.Source, Dest: p.Dest})
	}
	return w.run(ctx, t, p.Source.String(), p.Dest.String(), func(ctx context.Context, id string, prog *progress) (any, error) {
		dst, err := w.profiles.open(ctx, p.Dest.Profile, p.Dest.Bucket)
		if err != nil {
			return nil, err
		}
		meta := withTaskID(p.Metadata, id)
		if p.Source.Kind() == tasks.KindInline {
			prog.setTotal(int64(len(p.Source.Data)), 0)
			f, err := dst.PutBytes(ctx, p.Dest.Key, p.Source.Data, &storage.PutOptions{Headers: storage.Headers{ContentType: p.ContentType}, Metadata: meta})
			if err == nil {
				w.metrics.addBytes("upload", p.Dest.Profile, f.Size)
				prog.add(ctx, f.Size, 0)
			}
			return f, err
		}
		src, err := w.openSource(ctx, p.Source)
		if err != nil {
			return nil, err
		}
		return w.transfer(ctx, id, t, prog, src, dst, transferSpec{Dest: p.Dest, ContentType: p.ContentType, Metadata: p.Metadata})
	})
}

func (w *Worker) handleUpload(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeUpload(t)
	if err != nil {
		return err
	}
	return w.run(ctx, t, p.Source.String(), p.Dest.String(), func(ctx context.Context, id string, prog *progress) (any, error) {
		if p.Source.Kind() == tasks.KindS3 {
			if err := w.profiles.checkDistinct(p.Source, p.Dest); err != nil {
				return nil, err
			}
		}
		dst, err := w.profiles.open(ctx, p.Dest.Profile, p.Dest.Bucket)
		if err != nil {
			return nil, err
		}
		src, err := w.openSource(ctx, p.Source)
		if err != nil {
			return nil, err
		}
		return w.transfer(ctx, id, t, prog, src, dst, transferSpec{Dest: p.Dest, PartSize: p.PartSize,
			PartConcurrency: p.PartConcurrency, ContentType: p.ContentType, Metadata: p.Metadata})
	})
}

func (w *Worker) handleCopy(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeCopy(t)
	if err != nil {
		return err
	}
	return w.copyTask(ctx, t, copySpec{Source: p.Source, Dest: p.Dest, PartSize: p.PartSize, PartConcurrency: p.PartConcurrency,
		Migration: p.Migration})
}

func (w *Worker) handleMove(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeMove(t)
	if err != nil {
		return err
	}
	return w.copyTask(ctx, t, copySpec{Source: p.Source, Dest: p.Dest, PartSize: p.PartSize, PartConcurrency: p.PartConcurrency, Move: true})
}

// copySpec is what a copy or move task asks: the object to copy, where to,
// and how. The zero value of every field but Source and Dest is the
// default: the worker's part size and concurrency, a copy (the source
// stays), no migration.
type copySpec struct {
	// Source and Dest are the object copied and the object written.
	Source, Dest tasks.Location
	// PartSize is the part size of a streamed (cross-endpoint) copy's
	// multipart upload; 0 is Config.PartSize.
	PartSize int64
	// PartConcurrency is how many parts are copied or sent at once; 0 is
	// Config.PartConcurrency for a streamed copy, the storage package's
	// default for a server-side one.
	PartConcurrency int
	// Move deletes the source once the copy is verified (a move task);
	// false keeps it.
	Move bool
	// Migration is the id of the migration the copy belongs to, whose
	// copies share one SlowDown backoff; "" is a copy of its own.
	Migration string
}

// copyTask copies (and for a move, then deletes) an S3 object: server-side
// when both profiles reach the same endpoint, else streamed by ranged GETs
// into a checkpointed multipart upload. The destination records the source's
// ETag and size; a move deletes its source only after the destination is
// verified against them. Copies of one migration share its SlowDown backoff.
func (w *Worker) copyTask(ctx context.Context, t *asynq.Task, spec copySpec) error {
	return w.run(ctx, t, spec.Source.String(), spec.Dest.String(), func(ctx context.Context, id string, prog *progress) (any, error) {
		if err := w.migrationBackoff(ctx, spec.Migration); err != nil {
			return nil, err
		}
		f, err := w.copyObject(ctx, t, id, prog, spec)
		if err != nil && storage.IsThrottle(err) {
			w.throttled(ctx, spec.Migration)
		}
		return f, err
	})
}

func (w *Worker) copyObject(ctx context.Context, t *asynq.Task, id string, prog *progress, spec copySpec) (any, error) {
	srcLoc, dstLoc, move := spec.Source, spec.Dest, spec.Move
	dst, err := w.profiles.open(ctx, dstLoc.Profile, dstLoc.Bucket)
	if err != nil {
		return nil, err
	}
	if err := w.profiles.checkDistinct(srcLoc, dstLoc); err != nil {
		// Two spellings of one object: a move would delete its copy.
		return nil, err
	}
	same := w.profiles.sameEndpoint(srcLoc.Profile, dstLoc.Profile)
	srcProfile := srcLoc.Profile
	if same {
		srcProfile = dstLoc.Profile // one client for both buckets: server-side copy
	}
	src, err := w.profiles.open(ctx, srcProfile, srcLoc.Bucket)
	if err != nil {
		return nil, err
	}
	info, err := src.Info(ctx, srcLoc.Key)
	if errors.Is(err, storage.ErrNotFound) && move {
		// A retried move whose first run deleted the source already.
		if f, derr := dst.Info(ctx, dstLoc.Key); derr == nil && f.Metadata[metaTaskID] == id {
			w.taskLog(ctx, t).Info("move already completed by an earlier attempt")
			return f, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("copy source: %w", err)
	}
	prog.setTotal(info.Size, 0)
	meta := copyMeta(id, info)
	var f storage.StoredFile
	readChecked := false // the bytes read were checked against the source's ETag
	if same {
		f, err = dst.CopyFrom(ctx, src, srcLoc.Key, dstLoc.Key, &storage.CopyOptions{Metadata: meta, Concurrency: spec.PartConcurrency, Source: &info,
			Tracker: w.registrar(id, dstLoc.Profile, dstLoc.Bucket)}) // > 5 GiB copies are multipart
		if err == nil {
			prog.add(ctx, f.Size, 0)
		}
	} else {
		var s *source
		if s, err = s3Source(ctx, src, srcLoc.Key, info); err != nil {
			return nil, err
		}
		if s.unverified != "" {
			w.taskLog(ctx, t).Warn("unverified: the source's bytes cannot be checked as they are read", zap.String("source", srcLoc.String()), zap.String("why", s.unverified))
		}
		readChecked = s.etagCheck != nil
		f, err = w.transfer(ctx, id, t, prog, s, dst, transferSpec{Dest: dstLoc, PartSize: spec.PartSize,
			PartConcurrency: spec.PartConcurrency, Metadata: mergeMeta(info.Metadata, meta)})
	}
	if err != nil {
		return nil, err
	}
	if err := verifyCopy(info, f); err != nil {
		return nil, err
	}
	if move {
		d, err := confirmMove(ctx, id, src, srcLoc, dst, dstLoc, info)
		if err != nil {
			return nil, err
		}
		if same {
			// A server-side copy's result may be built from the copy's
			// answer (CopyFrom reads back only what the answer cannot
			// prove): the source is deleted on the strength of the
			// destination as read back, checked again.
			if err := verifyCopy(info, d); err != nil {
				return nil, fmt.Errorf("move: source kept: %w", err)
			}
			f = d
		}
		if err := sameChecksum(ctx, src, srcLoc, info, dstLoc, f, same, readChecked); err != nil {
			if errors.Is(err, storage.ErrIntegrity) {
				// The copy's bytes or the source's second read were
				// corrupted. The destination is this task's write
				// (confirmMove saw its id) and may be the corrupt one:
				// remove it, keep the source, copy again a bounded
				// number of times. Only the version confirmMove saw: a
				// writer's newer object at the key is theirs, and stays.
				if _, derr := dst.DeleteVersion(ctx, d); derr != nil {
					err = errors.Join(err, fmt.Errorf("delete the unproven copy: %w", derr))
				}
				err = w.integrityFailed(ctx, id, err)
			}
			return nil, err
		}
		// Never after a cancel, even of a complete copy: the source
		// stays, as the user asked the move to stop.
		if err := w.checkCancel(ctx, id); err != nil {
			return nil, err
		}
		if w.beforeMoveDelete != nil {
			w.beforeMoveDelete(id)
		}
		changed, err := src.DeleteVersion(ctx, info)
		if err != nil {
			return nil, fmt.Errorf("move: the copy at %s is verified but deleting the source failed: %w", dstLoc.String(), err)
		}
		if changed {
			// The copy holds the version before: the retry copies the
			// new one, and deletes it once that copy is verified.
			return nil, fmt.Errorf("move: source kept: %s was written again after it was copied to %s (%w); the next attempt of this task copies the new version",
				srcLoc.String(), dstLoc.String(), storage.ErrSourceChanged)
		}
	}
	return f, nil
}

// objectInfo is what a move's last check uses of either bucket: a HEAD.
// *storage.S3 satisfies it.
type objectInfo interface {
	Info(ctx context.Context, key string) (storage.StoredFile, error)
}

// confirmMove is a move's last check before it deletes its source, for
// spellings of one object that no normalisation can see (a DNS alias, a
// proxy, an IP address and a host name). A HEAD of the destination must show
// the object this task wrote: its ferry-task-id, the source's size and the
// source's ETag in ferry-source-etag (never size alone). A HEAD of the
// source must not: a source carrying this task's id is the object just
// written, so source and destination are one object, and the move deletes
// nothing and fails for good. It returns the destination as the HEAD shows
// it.
func confirmMove(ctx context.Context, id string, src objectInfo, srcLoc tasks.Location, dst objectInfo, dstLoc tasks.Location, info storage.StoredFile) (storage.StoredFile, error) {
	d, err := dst.Info(ctx, dstLoc.Key)
	if err != nil {
		return storage.StoredFile{}, fmt.Errorf("move: source kept: check the copy at %s: %w", dstLoc.String(), err)
	}
	if d.Metadata[metaTaskID] != id || d.Size != info.Size || d.Metadata[metaSourceETag] != info.ETag {
		return storage.StoredFile{}, fmt.Errorf("move: source kept: the destination %s is not this task's copy (task id %q, %d bytes, source ETag %q; want %q, %d bytes, %q): another writer changed it",
			dstLoc.String(), d.Metadata[metaTaskID], d.Size, d.Metadata[metaSourceETag], id, info.Size, info.ETag)
	}
	s, err := src.Info(ctx, srcLoc.Key)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return d, nil // gone already: the delete is a no-op
	case err != nil:
		return storage.StoredFile{}, fmt.Errorf("move: source kept: check the source %s: %w", srcLoc.String(), err)
	case s.Metadata[metaTaskID] == id:
		return storage.StoredFile{}, permanent(fmt.Errorf("move: deleted nothing: the source %s (profile %q) carries this task's id after the copy, so it is the object just written to %s (profile %q): source and destination are one object reached by two spellings (an IP address and a host name, a DNS alias, a proxy); give a destination that is another object",
			srcLoc.String(), tasks.ProfileName(srcLoc.Profile), dstLoc.String(), tasks.ProfileName(dstLoc.Profile)))
	}
	return d, nil
}

// checksumSource is what a move's proof (sameChecksum) uses of its source:
// whether its profile proves integrity, and its bytes read again for their
// CRC32C. *storage.S3 satisfies it.
type checksumSource interface {
	Client() *storage.Client
	ChecksumObject(ctx context.Context, key, etag string) (storage.Checksum, error)
}

// sameChecksum is a move's proof that the destination holds the source's
// bytes, not only its size and ETag: the CRC32C the destination records
// (its ferry-crc32c; else, for an upload that learnt it only at the end,
// the one its verified parts combine to, in f) must equal the source's.
// The source's is what it records, else, for a streamed copy, what its
// bytes as read were checked against: a source whose ETag could be
// recomputed (a plain MD5, or a multipart ETag whose part sizes the server
// told: readChecked) was checked while read (see transfer), so the CRC32C
// of those bytes is its own; any other is read again, and its CRC32C
// computed, before it is deleted. A server-side copy moves no bytes through ferry, so nothing
// in flight can corrupt them: it only has to carry the source's record
// over (CopyFrom sends it in the copy's metadata), and one without a
// record is left to size and ETag (verifyCopy). With integrity off on the
// destination's profile there is no checksum to compare.
func sameChecksum(ctx context.Context, src checksumSource, srcLoc tasks.Location, info storage.StoredFile, dstLoc tasks.Location, f storage.StoredFile, serverSide, readChecked bool) error {
	got := f.Checksum
	want := info.Checksum
	switch {
	case want != "":
	case serverSide || !src.Client().Integrity():
		return nil
	case readChecked:
		// Checked against the ETag while read: got is the source's too.
		return nil
	case got == "":
		return nil // integrity off on the destination: nothing to compare
	default:
		sum, err := src.ChecksumObject(ctx, srcLoc.Key, info.ETag)
		if err != nil {
			return fmt.Errorf("move: source kept: read the source again for its checksum: %w", err)
		}
		want = sum.String()
	}
	if got != want {
		return fmt.Errorf("move: source kept: the destination %s records checksum %q, the source %s has %q: %w",
			dstLoc.String(), got, srcLoc.String(), want, &storage.IntegrityError{Op: "move " + srcLoc.String(), Check: storage.MetaChecksum, Want: want, Got: got})
	}
	return nil
}

// sameHeaders reports whether dst has src's headers and user metadata,
// ferry's own metadata entries aside: without them a copy is not the same
// object to a browser or a CDN, whatever its bytes.
func sameHeaders(src, dst storage.StoredFile) bool {
	user := func(m map[string]string) map[string]string {
		m = maps.Clone(m)
		for _, k := range []string{metaTaskID, metaSourceETag, metaSourceSize, storage.MetaChecksum} {
			delete(m, k)
		}
		return m
	}
	return src.Headers == dst.Headers && maps.Equal(user(src.Metadata), user(dst.Metadata))
}

func mergeMeta(a, b map[string]string) map[string]string {
	m := maps.Clone(a)
	if m == nil {
		m = map[string]string{}
	}
	maps.Copy(m, b)
	return m
}

// verifyCopy checks the destination against the source it was made from.
func verifyCopy(src, dst storage.StoredFile) error {
	if err := storage.VerifyCopy(src, dst); err != nil {
		return err
	}
	if et := dst.Metadata[metaSourceETag]; et != "" && et != src.ETag {
		return fmt.Errorf("copy verification failed: destination was made from ETag %s, source is %s", et, src.ETag)
	}
	return nil
}

func (w *Worker) handleDelete(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeDelete(t)
	if err != nil {
		return err
	}
	return w.run(ctx, t, "", p.Dest.String(), func(ctx context.Context, id string, prog *progress) (any, error) {
		dst, err := w.profiles.open(ctx, p.Dest.Profile, p.Dest.Bucket)
		if err != nil {
			return nil, err
		}
		if !p.Recursive {
			return map[string]int{"deleted": 1}, dst.Delete(ctx, p.Dest.Key)
		}
		if p.DryRun {
			return previewDelete(ctx, dst, p.Dest.Key)
		}
		// Owned (see takeover.go): a killed worker's delete is taken over
		// within seconds, and every DeleteObjects is fenced.
		return runOwned(ctx, w, id, w.taskLog(ctx, t), prog, func(ctx context.Context) (map[string]int, error) {
			return w.deleteTree(ctx, id, p.Dest.Key, dst, prog)
		}, replay[map[string]int])
	})
}

// deleteTree deletes every object under prefix, in batches of 1000, and
// returns how many it deleted. Deleting what was listed never skips keys:
// the listing restarts after each batch from the prefix, and deleted keys
// are gone from it; so a resumed run (a retry, a takeover) continues from
// what is left, and its count from the task's published one.
func (w *Worker) deleteTree(ctx context.Context, id, prefix string, dst *storage.S3, prog *progress) (map[string]int, error) {
	deleted := w.publishedCounter(ctx, id, "deleted")
	prog.counters(ctx, map[string]int64{"deleted": int64(deleted)}, false)
	for {
		batch := make([]string, 0, 1000)
		for f, err := range dst.List(ctx, prefix, 1000) {
			if err != nil {
				return nil, err
			}
			batch = append(batch, f.Key)
		}
		if len(batch) == 0 {
			return map[string]int{"deleted": deleted}, nil
		}
		// Before every batch, the first too: nothing is deleted after a
		// cancel, nor by a run that lost the task (the fence before a write
		// outside Redis).
		if err := w.checkCancel(ctx, id); err != nil {
			return nil, err
		}
		if err := w.checkOwner(ctx, id); err != nil {
			return nil, err
		}
		n, err := dst.DeleteMany(ctx, batch)
		deleted += n
		prog.counters(ctx, map[string]int64{"deleted": int64(deleted)}, true) // forced: a resumed run counts on from it
		if err != nil {
			return nil, err
		}
	}
}

// publishedCounter is counter c of the task's published progress (0 when
// there is none): where a resumed run's count goes on from.
func (w *Worker) publishedCounter(ctx context.Context, id, c string) int {
	h, err := w.rdb.HGetAll(ctx, tasks.ProgressKey(id)).Result()
	if err != nil || len(h) == 0 {
		return 0
	}
	p, err := tasks.ParseProgress(id, h)
	if err != nil {
		return 0
	}
	return int(p.Counters[c])
}

// copyMeta is the metadata a copy by task id of the object info records:
// the task, the source's ETag and size (how a re-run proves the copy), and
// what the source records of its bytes (its ferry-crc32c, or the server's
// full-object CRC32C), which a streamed copy's bytes must then match (Put
// and Complete refuse others). Every copy path uses it, batches included.
func copyMeta(id string, info storage.StoredFile) map[string]string {
	meta := withTaskID(map[string]string{metaSourceETag: info.ETag, metaSourceSize: strconv.FormatInt(info.Size, 10)}, id)
	if info.Checksum != "" {
		meta[storage.MetaChecksum] = info.Checksum
	}
	return meta
}
