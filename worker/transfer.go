package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// Metadata keys ferry writes on every object it creates.
const (
	// metaTaskID names the task that wrote the object: a retried Complete
	// whose first answer was lost, or a retried move whose source is
	// already gone, recognises its own work by it.
	metaTaskID = "ferry-task-id"
	// metaSourceETag and metaSourceSize record what a copy was made from,
	// so later runs can tell an identical destination cheaply even when
	// its ETag is an opaque multipart one.
	metaSourceETag = "ferry-source-etag"
	metaSourceSize = "ferry-source-size"
)

// upload is one resumable multipart upload of a task.
type upload struct {
	taskID      string
	profile     string
	dst         *storage.S3
	key         string
	src         *source
	partSize    int64
	concurrency int
	headers     storage.Headers
	metadata    map[string]string
	prog        *progress
	log         *zap.Logger
}

// runUpload uploads u.src to u.dst with checkpoints: it resumes the task's
// checkpoint when one matches (ListParts is the source of truth; parts
// whose number and ETag agree are skipped), restarts cleanly when the
// source changed, and aborts the upload when the task is cancelled, fails
// for good, or runs out of retries. On shutdown it stops at a part boundary
// and leaves the checkpoint for the next worker.
//
// The run owns the task's upload while it writes (see takeover.go): a run
// of asynq that finds a takeover of the task in progress waits for it, and
// completes at once when the takeover completed the upload; a run that
// loses its ownership (it paused longer than ownershipTTL and another
// worker took over) stops writing and, as a run of asynq, waits likewise.
func (w *Worker) runUpload(ctx context.Context, u *upload) (storage.StoredFile, error) {
	for {
		c, done, err := w.acquire(ctx, u.taskID, u.log)
		if err != nil {
			return storage.StoredFile{}, err
		}
		if done {
			u.log.Info("a takeover completed this upload")
			f, err := w.finishedEarlier(ctx, u, "")
			if err == nil {
				w.rdb.HDel(ctx, takeoverIndexKey, u.taskID)
				if cerr := w.ckpt.ClearDone(ctx, u.taskID); cerr != nil {
					u.log.Warn("could not clear the takeover's done mark (it expires)", zap.Error(cerr))
				}
			}
			return f, err
		}
		octx, stop := w.hold(ctx, c)
		f, err := w.uploadOwned(octx, u, c.token)
		stop()
		if err != nil && !errors.Is(err, checkpoint.ErrNotOwner) && lostOwnership(octx, err) {
			// Stopped by hold's cancel: say why.
			err = fmt.Errorf("%w (stopped writing: %w)", context.Cause(octx), err)
		}
		w.release(ctx, c, err, u.log)
		switch {
		case errors.Is(err, errShuttingDown) && !c.takeover:
			// Keep running until asynq's shutdown timeout puts the task back
			// in the queue: returning now would count a retry. Released
			// already, so another worker's takeover continues it now.
			<-ctx.Done()
			return f, err
		case c.takeover || err == nil || !lostOwnership(ctx, err):
			return f, err
		}
		u.log.Warn("lost the ownership of this upload to another worker (paused longer than its expiry?); stopped writing, waiting for that worker", zap.Error(err))
	}
}

// uploadOwned is runUpload's body for the owner with token: every part's
// checkpoint and the Complete are fenced by it.
func (w *Worker) uploadOwned(ctx context.Context, u *upload, token int64) (storage.StoredFile, error) {
	mu, uploadID, skip, err := w.resume(ctx, u)
	if err != nil {
		return storage.StoredFile{}, err
	}
	if mu == nil {
		// resume found the upload already completed by an earlier run.
		return w.finishedEarlier(ctx, u, uploadID)
	}
	parts := int((u.src.size + mu.PartSize - 1) / mu.PartSize)
	u.prog.setTotal(u.src.size, parts)
	done := mu.Parts()
	if len(done) > 0 {
		var b int64
		for _, p := range done {
			b += p.Size
		}
		u.prog.resumed(ctx, b, len(done))
	}
	err = u.dst.UploadParts(ctx, mu, u.src.parts, storage.PartsOptions{
		Concurrency: u.concurrency,
		Buffers:     w.buffers,
		Skip:        func(n int) bool { return skip[n] },
		BeforePartFunc: func() error {
			return w.checkInterrupt(ctx, u.taskID)
		},
		OnPartFunc: func(p storage.Part) error {
			u.log.Debug("part uploaded", zap.Int("part", p.Number), zap.String("upload_id", mu.UploadID))
			w.metrics.partUploaded(u.profile)
			w.metrics.addBytes("upload", u.profile, p.Size)
			w.metrics.checkpointOp("record_part")
			if err := w.ckpt.RecordPartOwned(ctx, u.taskID, mu.UploadID, token, checkpoint.Part{Number: p.Number, ETag: p.ETag, Size: p.Size}); err != nil {
				return fmt.Errorf("checkpoint part %d: %w", p.Number, err)
			}
			u.prog.add(ctx, p.Size, 1)
			return nil
		},
	})
	if err == nil {
		// Every part is read: a source that changed meanwhile would
		// complete as a mix of two versions.
		err = u.src.check()
	}
	if err == nil {
		// The fence before the one write no checkpoint guards: a run that
		// lost the upload must not complete it under the new owner.
		err = w.ckpt.CheckOwner(ctx, u.taskID, token)
	}
	if err == nil {
		var f storage.StoredFile
		f, err = u.dst.CompleteMultipartUpload(ctx, mu)
		if errors.Is(err, storage.ErrUploadNotFound) {
			// Our Complete may have succeeded with its answer lost, and a
			// retried Complete finds the upload gone.
			return w.finishedEarlier(ctx, u, mu.UploadID)
		}
		if err == nil {
			w.deleteCheckpoint(ctx, u.taskID, mu.UploadID)
			return f, nil
		}
	}
	return storage.StoredFile{}, w.uploadFailed(ctx, u, mu.UploadID, err)
}

// resume returns the multipart upload to continue (a new one when there is
// no usable checkpoint) and the part numbers to skip. It returns a nil
// upload, with the checkpoint's upload id, when that upload no longer exists
// but the object may (see finishedEarlier).
func (w *Worker) resume(ctx context.Context, u *upload) (*storage.MultipartUpload, string, map[int]bool, error) {
	start := func() (*storage.MultipartUpload, string, map[int]bool, error) {
		mu, err := w.startUpload(ctx, u)
		if err != nil {
			return nil, "", nil, err
		}
		return mu, mu.UploadID, nil, nil
	}
	w.metrics.checkpointOp("load")
	ck, err := w.ckpt.Load(ctx, u.taskID)
	var corrupt *checkpoint.CorruptError
	switch {
	case errors.Is(err, checkpoint.ErrNotFound):
		return start()
	case errors.As(err, &corrupt):
		// Unreadable: it can never be resumed, and while it exists the
		// janitor aborts nothing. Start over; the janitor collects the old
		// upload once it is older than its TTL.
		u.log.Warn("checkpoint is corrupt; starting the upload over", zap.Error(err))
		w.deleteCheckpoint(ctx, u.taskID, corrupt.UploadID)
		return start()
	case err != nil:
		return nil, "", nil, fmt.Errorf("load checkpoint: %w", err)
	}
	plan := ck.Plan
	log := u.log.With(zap.String("upload_id", plan.UploadID))
	if plan.Fingerprint != u.src.fingerprint || plan.Bucket != u.dst.Bucket() || plan.Key != u.key || plan.Profile != u.profile {
		log.Info("source or destination changed since the checkpoint; aborting the old upload and starting over",
			zap.String("was", plan.Fingerprint), zap.String("now", u.src.fingerprint))
		if err := w.abandon(ctx, u, plan, "source-changed"); err != nil {
			return nil, "", nil, err
		}
		return start()
	}
	listed, err := u.dst.ListParts(ctx, u.key, plan.UploadID)
	if errors.Is(err, storage.ErrUploadNotFound) {
		return nil, plan.UploadID, nil, nil
	}
	if err != nil {
		return nil, "", nil, fmt.Errorf("resume upload %s: %w", plan.UploadID, err)
	}
	want := make(map[int]string, len(ck.Parts))
	for _, p := range ck.Parts {
		want[p.Number] = p.ETag
	}
	var agreed []storage.Part
	skip := map[int]bool{}
	for _, p := range listed {
		if et, ok := want[p.Number]; ok && et == p.ETag {
			agreed = append(agreed, p)
			skip[p.Number] = true
		}
	}
	w.metrics.partsResumed(len(agreed), len(ck.Parts)-len(agreed))
	log.Info("resuming upload from its checkpoint", zap.Int("parts_done", len(agreed)),
		zap.Int("parts_checkpointed", len(ck.Parts)), zap.Int("parts_listed", len(listed)))
	return storage.NewMultipartUpload(u.key, plan.UploadID, plan.PartSize, agreed), plan.UploadID, skip, nil
}

// startUpload starts a multipart upload and writes its plan, once.
func (w *Worker) startUpload(ctx context.Context, u *upload) (*storage.MultipartUpload, error) {
	ps := storage.PartSizeFor(u.src.size, u.partSize)
	if ps != u.partSize {
		// A task that set part_size with its size is refused at enqueue
		// when it is too small; here the size was unknown to the producer
		// (or the default part size is too small for this source).
		u.log.Info("part size raised to fit the source in 10,000 parts", zap.Int64("requested", u.partSize),
			zap.Int64("part_size", ps), zap.Int64("size", u.src.size))
	}
	meta := maps.Clone(u.metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[metaTaskID] = u.taskID
	mu, err := u.dst.StartMultipartUpload(ctx, u.key, &storage.MultipartOptions{Headers: u.headers, Metadata: meta, PartSize: ps})
	if err != nil {
		return nil, err
	}
	w.metrics.checkpointOp("create")
	err = w.ckpt.Create(ctx, u.taskID, checkpoint.Plan{UploadID: mu.UploadID, Profile: u.profile, Bucket: u.dst.Bucket(),
		Key: u.key, PartSize: ps, PartCount: int((u.src.size + ps - 1) / ps), TotalSize: u.src.size,
		Fingerprint: u.src.fingerprint, CreatedAt: time.Now()})
	if err != nil {
		// Without a plan nobody could resume or abort this upload: abort it now.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = u.dst.AbortMultipartUpload(actx, u.key, mu.UploadID)
		return nil, fmt.Errorf("write checkpoint: %w", err)
	}
	u.log.Info("multipart upload started", zap.String("upload_id", mu.UploadID), zap.Int64("part_size", ps), zap.Int64("size", u.src.size))
	return mu, nil
}

// finishedEarlier handles an upload (uploadID) that vanished from the
// server: if the destination object exists with our task id and the
// expected size, an earlier Complete succeeded; otherwise the upload was
// lost (aborted by someone else) and the task restarts from scratch on its
// next retry.
func (w *Worker) finishedEarlier(ctx context.Context, u *upload, uploadID string) (storage.StoredFile, error) {
	f, err := u.dst.Info(ctx, u.key)
	if err == nil && f.Metadata[metaTaskID] == u.taskID && f.Size == u.src.size {
		u.log.Info("upload was already completed by an earlier attempt")
		w.deleteCheckpoint(ctx, u.taskID, uploadID)
		return f, nil
	}
	w.deleteCheckpoint(ctx, u.taskID, uploadID)
	return storage.StoredFile{}, fmt.Errorf("the multipart upload of this task is gone from the server (aborted elsewhere?); it restarts on retry")
}

// uploadFailed decides what a failed upload leaves behind. Cancel, a
// permanent error or the last retry abort the upload and delete the
// checkpoint; a shutdown or a transient error keeps both for the retry.
func (w *Worker) uploadFailed(ctx context.Context, u *upload, uploadID string, err error) error {
	if lostOwnership(ctx, err) {
		// The upload is another worker's now: never abort it.
		return err
	}
	err = classify(err)
	if errors.Is(err, errShuttingDown) {
		u.log.Info("upload paused for shutdown at a part boundary; checkpoint kept", zap.String("upload_id", uploadID))
		return errShuttingDown
	}
	reason := ""
	switch {
	case errors.Is(err, errCancelled):
		reason = "cancelled"
	case errors.Is(err, storage.ErrSourceChanged):
		// Its parts may hold another version of the source: never
		// resumable. The retry starts over from the source as it is then.
		reason = "source-changed"
	case errors.Is(err, asynq.SkipRetry) || lastAttempt(ctx):
		reason = "failed"
	}
	if reason == "" {
		return err
	}
	plan := checkpoint.Plan{UploadID: uploadID, Bucket: u.dst.Bucket(), Key: u.key}
	if aerr := w.abandon(ctx, u, plan, reason); aerr != nil {
		return errors.Join(err, aerr)
	}
	return err
}

// abandon aborts a checkpoint's upload and deletes the checkpoint.
func (w *Worker) abandon(ctx context.Context, u *upload, plan checkpoint.Plan, reason string) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	dst := u.dst
	if plan.Bucket != "" && plan.Bucket != dst.Bucket() {
		s, err := w.profiles.open(actx, plan.Profile, plan.Bucket)
		if err != nil {
			return fmt.Errorf("abort old upload %s: %w", plan.UploadID, err)
		}
		dst = s
	}
	key := plan.Key
	if key == "" {
		key = u.key
	}
	if err := dst.AbortMultipartUpload(actx, key, plan.UploadID); err != nil {
		return fmt.Errorf("abort upload %s: %w", plan.UploadID, err)
	}
	w.metrics.uploadAborted(reason)
	u.log.Info("multipart upload aborted", zap.String("upload_id", plan.UploadID), zap.String("reason", reason))
	w.deleteCheckpoint(actx, u.taskID, plan.UploadID)
	return nil
}

// deleteCheckpoint deletes the task's checkpoint if it still belongs to
// uploadID: after this run's lease expired another run may have replaced it
// with its own upload, which must keep its checkpoint (else the janitor
// could abort it and its parts could not be recorded).
func (w *Worker) deleteCheckpoint(ctx context.Context, taskID, uploadID string) {
	w.metrics.checkpointOp("delete")
	err := w.ckpt.Delete(context.WithoutCancel(ctx), taskID, uploadID)
	switch {
	case errors.Is(err, checkpoint.ErrPlanMismatch):
		w.log.Info("checkpoint belongs to a newer run of the task; left intact",
			zap.String("task_id", taskID), zap.String("upload_id", uploadID))
	case err != nil:
		w.log.Warn("could not delete checkpoint", zap.String("task_id", taskID), zap.Error(err))
	}
}

// checkInterrupt is called between parts: it stops the upload when the
// worker shuts down or a user cancelled the task.
func (w *Worker) checkInterrupt(ctx context.Context, taskID string) error {
	if w.stopping.Load() {
		return errShuttingDown
	}
	c, err := tasks.Cancelled(ctx, w.rdb, taskID)
	if err != nil {
		return fmt.Errorf("check cancel flag: %w", err)
	}
	if c {
		return errCancelled
	}
	return nil
}
