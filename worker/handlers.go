package worker

import (
	"bytes"
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
// progress, the result, and error classification. A cancel is honoured
// between parts (checkInterrupt): tasks.Client.Cancel archives a task that
// has not started yet, so checking the flag up front as well would cost
// every small object a Redis round trip for a narrow race.
func (w *Worker) run(ctx context.Context, t *asynq.Task, src, dst string, body func(context.Context, string, *progress) (any, error)) error {
	id := taskIDOf(ctx)
	prog := w.newProgress(ctx, id, t.Type(), src, dst)
	defer prog.close()
	res, err := body(ctx, id, prog)
	if err != nil {
		return classify(err)
	}
	writeResult(t, res)
	prog.finish(ctx, tasks.StateCompleted)
	return nil
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
		return w.copyTask(ctx, t, p.Source, p.Dest, 0, 0, false, "")
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
			}
			return f, err
		}
		src, err := w.openSource(ctx, p.Source)
		if err != nil {
			return nil, err
		}
		return w.transfer(ctx, id, t, prog, src, p.Dest, dst, 0, 0, p.ContentType, p.Metadata)
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
		return w.transfer(ctx, id, t, prog, src, p.Dest, dst, p.PartSize, p.PartConcurrency, p.ContentType, p.Metadata)
	})
}

// transfer moves a file, https or S3 source to dst: one PutObject up to a
// part size, a checkpointed multipart upload above it (or a streamed one
// when the source cannot be read by range). The object gets the source's
// headers, with contentType (when not empty) in place of its Content-Type.
func (w *Worker) transfer(ctx context.Context, id string, t *asynq.Task, prog *progress, src *source, dstLoc tasks.Location,
	dst *storage.S3, partSize int64, partConc int, contentType string, meta map[string]string) (_ storage.StoredFile, err error) {
	defer src.Close()
	defer func() {
		if errors.Is(err, storage.ErrSourceChanged) {
			err = w.sourceChanged(ctx, id, err)
		}
	}()
	hdr := src.headers
	if contentType != "" {
		hdr.ContentType = contentType
	}
	if partSize == 0 {
		partSize = w.cfg.PartSize
	}
	if partConc == 0 {
		partConc = w.cfg.PartConcurrency
	}
	meta = withTaskID(meta, id)
	// Register before any multipart upload starts, so the janitor scans
	// this bucket should the worker die mid-way.
	w.registerBucket(ctx, dstLoc.Profile, dstLoc.Bucket)
	switch {
	case src.size >= 0 && src.size <= partSize:
		prog.setTotal(src.size, 0)
		buf, err := w.buffers.Get(ctx, int(partSize))
		if err != nil {
			return storage.StoredFile{}, err
		}
		defer w.buffers.Put(buf)
		n, err := readSmall(ctx, src, buf)
		if err != nil {
			return storage.StoredFile{}, fmt.Errorf("read %s: %w", src.display, err)
		}
		if err := src.check(); err != nil {
			return storage.StoredFile{}, err
		}
		f, err := dst.Put(ctx, dstLoc.Key, bytes.NewReader(buf[:n]), &storage.PutOptions{Headers: hdr, Metadata: meta})
		if err == nil {
			w.metrics.addBytes("upload", dstLoc.Profile, f.Size)
			prog.add(ctx, f.Size, 0)
		}
		return f, err
	case src.parts == nil:
		// An https source without ranges or length: stream it, bounded,
		// but it cannot resume (there is no way to seek back into it).
		w.taskLog(ctx, t).Warn("source cannot be read by range; streaming without checkpoints", zap.String("source", src.display))
		rc, err := src.open(ctx)
		if err != nil {
			return storage.StoredFile{}, err
		}
		defer rc.Close()
		// A known length fits the part size to it; an unknown one (-1,
		// passed as 0) lets the parts grow as the stream goes.
		return dst.PutLarge(ctx, dstLoc.Key, rc, &storage.LargeOptions{Headers: hdr, Metadata: meta,
			PartSize: partSize, Concurrency: partConc, Buffers: w.buffers, Size: max(src.size, 0),
			ProgressFunc: func(done, _ int64) { prog.setDone(ctx, done) }})
	}
	return w.runUpload(ctx, &upload{taskID: id, profile: profileName(dstLoc.Profile), dst: dst, key: dstLoc.Key, src: src,
		partSize: partSize, concurrency: partConc, headers: hdr, metadata: meta, prog: prog, log: w.taskLog(ctx, t)})
}

// readSmall reads a source of at most one part into buf: by range when it
// can, else as a stream (an https server without Accept-Ranges).
func readSmall(ctx context.Context, src *source, buf []byte) (int, error) {
	if src.size == 0 {
		return 0, nil
	}
	if src.parts != nil {
		return src.parts.ReadPart(ctx, 1, buf)
	}
	rc, err := src.open(ctx)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return readExactly(rc, buf[:src.size])
}

func profileName(p string) string {
	if p == "" {
		return tasks.DefaultProfile
	}
	return p
}

func (w *Worker) handleCopy(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeCopy(t)
	if err != nil {
		return err
	}
	return w.copyTask(ctx, t, p.Source, p.Dest, p.PartSize, p.PartConcurrency, false, p.Migration)
}

func (w *Worker) handleMove(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeMove(t)
	if err != nil {
		return err
	}
	return w.copyTask(ctx, t, p.Source, p.Dest, p.PartSize, p.PartConcurrency, true, "")
}

// copyTask copies (and for a move, then deletes) an S3 object: server-side
// when both profiles reach the same endpoint, else streamed by ranged GETs
// into a checkpointed multipart upload. The destination records the source's
// ETag and size; a move deletes its source only after the destination is
// verified against them. Copies of one migration share its SlowDown backoff.
func (w *Worker) copyTask(ctx context.Context, t *asynq.Task, srcLoc, dstLoc tasks.Location, partSize int64, partConc int, move bool, migration string) error {
	return w.run(ctx, t, srcLoc.String(), dstLoc.String(), func(ctx context.Context, id string, prog *progress) (any, error) {
		if err := w.migrationBackoff(ctx, migration); err != nil {
			return nil, err
		}
		f, err := w.copyObject(ctx, t, id, prog, srcLoc, dstLoc, partSize, partConc, move)
		if err != nil && storage.IsThrottle(err) {
			w.throttled(ctx, migration)
		}
		return f, err
	})
}

func (w *Worker) copyObject(ctx context.Context, t *asynq.Task, id string, prog *progress, srcLoc, dstLoc tasks.Location, partSize int64, partConc int, move bool) (any, error) {
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
	meta := map[string]string{metaTaskID: id, metaSourceETag: info.ETag, metaSourceSize: strconv.FormatInt(info.Size, 10)}
	var f storage.StoredFile
	if same {
		w.registerBucket(ctx, dstLoc.Profile, dstLoc.Bucket) // > 5 GiB copies are multipart
		f, err = dst.CopyFrom(ctx, src, srcLoc.Key, dstLoc.Key, &storage.CopyOptions{Metadata: meta, Concurrency: partConc})
		if err == nil {
			prog.add(ctx, f.Size, 0)
		}
	} else {
		f, err = w.transfer(ctx, id, t, prog, s3Source(src, srcLoc.Key, info), dstLoc, dst, partSize, partConc, "", mergeMeta(info.Metadata, meta))
	}
	if err != nil {
		return nil, err
	}
	if err := verifyCopy(info, f); err != nil {
		return nil, err
	}
	if move {
		if err := confirmMove(ctx, id, src, srcLoc, dst, dstLoc, info); err != nil {
			return nil, err
		}
		if err := src.Delete(ctx, srcLoc.Key); err != nil {
			return nil, fmt.Errorf("move: the copy at %s is verified but deleting the source failed: %w", dstLoc.String(), err)
		}
	}
	return f, nil
}

// confirmMove is a move's last check before it deletes its source, for
// spellings of one object that no normalisation can see (a DNS alias, a
// proxy, an IP address and a host name). A HEAD of the destination must show
// the object this task wrote: its ferry-task-id, the source's size and the
// source's ETag in ferry-source-etag (never size alone). A HEAD of the
// source must not: a source carrying this task's id is the object just
// written, so source and destination are one object, and the move deletes
// nothing and fails for good.
func confirmMove(ctx context.Context, id string, src *storage.S3, srcLoc tasks.Location, dst *storage.S3, dstLoc tasks.Location, info storage.StoredFile) error {
	d, err := dst.Info(ctx, dstLoc.Key)
	if err != nil {
		return fmt.Errorf("move: source kept: check the copy at %s: %w", dstLoc.String(), err)
	}
	if d.Metadata[metaTaskID] != id || d.Size != info.Size || d.Metadata[metaSourceETag] != info.ETag {
		return fmt.Errorf("move: source kept: the destination %s is not this task's copy (task id %q, %d bytes, source ETag %q; want %q, %d bytes, %q): another writer changed it",
			dstLoc.String(), d.Metadata[metaTaskID], d.Size, d.Metadata[metaSourceETag], id, info.Size, info.ETag)
	}
	s, err := src.Info(ctx, srcLoc.Key)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil // gone already: the delete is a no-op
	case err != nil:
		return fmt.Errorf("move: source kept: check the source %s: %w", srcLoc.String(), err)
	case s.Metadata[metaTaskID] == id:
		return permanent(fmt.Errorf("move: deleted nothing: the source %s (profile %q) carries this task's id after the copy, so it is the object just written to %s (profile %q): source and destination are one object reached by two spellings (an IP address and a host name, a DNS alias, a proxy); give a destination that is another object",
			srcLoc.String(), profileName(srcLoc.Profile), dstLoc.String(), profileName(dstLoc.Profile)))
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
		// List and delete in batches of 1000. Deleting what was listed
		// never skips keys: the listing restarts after each batch from the
		// prefix, and deleted keys are gone from it.
		deleted := 0
		for {
			batch := make([]string, 0, 1000)
			for f, err := range dst.List(ctx, p.Dest.Key, 1000) {
				if err != nil {
					return nil, err
				}
				batch = append(batch, f.Key)
			}
			if len(batch) == 0 {
				return map[string]int{"deleted": deleted}, nil
			}
			n, err := dst.DeleteMany(ctx, batch)
			deleted += n
			prog.counters(ctx, map[string]int64{"deleted": int64(deleted)}, false)
			if err != nil {
				return nil, err
			}
			if err := w.checkInterrupt(ctx, id); err != nil && !errors.Is(err, errShuttingDown) {
				return nil, err
			}
		}
	})
}
