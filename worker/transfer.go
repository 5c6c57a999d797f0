package worker

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
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
	// metaSourceMtime records the modification time (Unix nanoseconds)
	// of the local file an object was written from, with its size in
	// metaSourceSize: a migration of the file's tree finds the object
	// identical by the two without reading the file.
	metaSourceMtime = "ferry-source-mtime"
)

// uploadTarget is what a checkpointed multipart upload uses of its
// destination bucket, in storage's own signatures: *storage.S3 satisfies
// it, and tests fake it to see the calls an upload makes
// (upload_fakes_test.go).
type uploadTarget interface {
	Bucket() string
	// Info tells whether an upload whose id vanished was completed.
	Info(ctx context.Context, key string) (storage.StoredFile, error)
	StartMultipartUpload(ctx context.Context, key string, opts *storage.MultipartOptions) (*storage.MultipartUpload, error)
	ListParts(ctx context.Context, key, uploadID string) ([]storage.Part, error)
	UploadParts(ctx context.Context, u *storage.MultipartUpload, src storage.PartSource, o storage.PartsOptions) error
	CompleteMultipartUpload(ctx context.Context, u *storage.MultipartUpload) (storage.StoredFile, error)
	AbortMultipartUpload(ctx context.Context, key, uploadID string) error
	// UploadChecksumMode is the checksum mode of the uploads this
	// destination creates, and speaks to: a checkpoint records it, and a
	// resume that finds another starts over (see resume).
	UploadChecksumMode() string
}

// putTarget is what a one-request write (putSmall) uses of its
// destination.
type putTarget interface {
	Put(ctx context.Context, key string, body io.Reader, opts *storage.PutOptions) (storage.StoredFile, error)
}

// transferTarget is what transfer uses of its destination: every way it
// writes an object, and the client's settings (whether it proves
// integrity). *storage.S3 satisfies it.
type transferTarget interface {
	uploadTarget
	putTarget
	PutLarge(ctx context.Context, key string, body io.Reader, opts *storage.LargeOptions) (storage.StoredFile, error)
	Client() *storage.Client
}

// uploadCheckpoints is what an upload uses of the checkpoint store
// (*checkpoint.Store): its plan, its finished parts, and its owner's fence.
type uploadCheckpoints interface {
	Create(ctx context.Context, taskID string, p checkpoint.Plan) error
	Load(ctx context.Context, taskID string) (checkpoint.Checkpoint, error)
	RecordPartOwned(ctx context.Context, taskID, uploadID string, token int64, p checkpoint.Part) error
	CheckOwner(ctx context.Context, taskID string, token int64) error
	Delete(ctx context.Context, taskID, uploadID string) error
}

// upload is one resumable multipart upload of a task.
type upload struct {
	taskID  string
	profile string
	dst     uploadTarget
	// integrity is the destination's client's Integrity(): the object's
	// checksum is recorded (for a file, computed before the first part).
	integrity   bool
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
// source or the destination's checksum mode changed, and aborts the upload when the task is cancelled, fails
// for good, or runs out of retries. On shutdown it stops at a part boundary
// and leaves the checkpoint for the next worker.
//
// The run owns the task while it writes (runOwned, see takeover.go): a run
// of asynq that finds a takeover of the task in progress waits for it, and
// completes at once when the takeover completed the upload (the object is
// checked as for a lost Complete); a run that loses its ownership stops
// writing and, as a run of asynq, waits likewise.
func (w *Worker) runUpload(ctx context.Context, u *upload) (storage.StoredFile, error) {
	return runOwned(ctx, w, u.taskID, u.log, u.prog,
		func(ctx context.Context) (storage.StoredFile, error) {
			c := claimFrom(ctx)
			return w.uploadOwned(ctx, u, c.token)
		},
		func(ctx context.Context, o *outcome) (storage.StoredFile, error) {
			if err := o.err(); err != nil {
				return storage.StoredFile{}, err
			}
			return w.finishedEarlier(ctx, u, "")
		})
}

// uploadOwned is runUpload's body for the owner with token: every part's
// checkpoint and the Complete are fenced by it.
func (w *Worker) uploadOwned(ctx context.Context, u *upload, token int64) (storage.StoredFile, error) {
	mu, uploadID, skip, err := w.resume(ctx, u, token)
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
		nums := make([]int, 0, len(done))
		for _, p := range done {
			b += p.Size
			nums = append(nums, p.Number)
		}
		u.prog.resumed(ctx, b, nums)
	}
	var whole *storage.ETagHash
	var inOrder func(int, []byte)
	var resumedBad error // a finished part whose bytes are not the source's
	if u.src.etagCheck != nil {
		// The source records only its ETag, an MD5 (of its bytes, or of
		// its parts' MD5s), which does not combine: hash the parts in
		// order. A resume reads its finished parts again for it, and
		// those bytes must be the ones that were sent: the first read may
		// have been corrupted (and the server accepted it, its
		// Content-MD5 being of those bytes) while this read is clean, so
		// the digest alone would pass. Each is held to the CRC32C its
		// checkpoint recorded of the bytes sent.
		sent := map[int]string{}
		for _, p := range done {
			sent[p.Number] = p.Checksum
		}
		whole = u.src.etagCheck.NewHash()
		inOrder = func(n int, b []byte) {
			_, _ = whole.Write(b)
			if want, ok := sent[n]; ok && resumedBad == nil {
				if got := storage.ChecksumOf(b).String(); got != want {
					resumedBad = &storage.IntegrityError{Op: fmt.Sprintf("resume: part %d of %s, read again", n, u.src.display),
						Check: "checkpointed CRC32C of the bytes sent", Want: want, Got: got}
				}
			}
		}
	}
	err = u.dst.UploadParts(ctx, mu, u.src.parts, storage.PartsOptions{
		Concurrency: u.concurrency,
		Buffers:     w.buffers,
		InOrder:     inOrder,
		Skip:        func(n int) bool { return skip[n] },
		BeforePartFunc: func() error {
			return w.checkInterrupt(ctx, u.taskID)
		},
		OnPartFunc: func(p storage.Part) error {
			u.log.Debug("part uploaded", zap.Int("part", p.Number), zap.String("upload_id", mu.UploadID))
			w.metrics.partUploaded(u.profile)
			w.metrics.addBytes("upload", u.profile, p.Size)
			w.metrics.checkpointOp("record_part")
			// With its checksum: a resumed upload combines the finished
			// parts' into the object's without reading them again.
			if err := w.ckpt.RecordPartOwned(ctx, u.taskID, mu.UploadID, token,
				checkpoint.Part{Number: p.Number, ETag: p.ETag, Size: p.Size, Checksum: p.Checksum}); err != nil {
				return fmt.Errorf("checkpoint part %d: %w", p.Number, err)
			}
			u.prog.partDone(ctx, p.Number, p.Size)
			return nil
		},
		StartPartFunc: u.prog.partStarted,
	})
	if err == nil && whole != nil {
		err = resumedBad
		if err == nil {
			err = whole.Verify("read " + u.src.display)
		}
	}
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
			w.forgetUpload(ctx, u.taskID, mu.UploadID)
			return f, nil
		}
	}
	return storage.StoredFile{}, w.uploadFailed(ctx, u, mu.UploadID, token, err)
}

// resume returns the multipart upload to continue (a new one when there is
// no usable checkpoint) and the part numbers to skip. It returns a nil
// upload, with the checkpoint's upload id, when that upload no longer exists
// but the object may (see finishedEarlier). A checkpoint it cannot resume
// is abandoned only while token owns the task (see abandon).
func (w *Worker) resume(ctx context.Context, u *upload, token int64) (*storage.MultipartUpload, string, map[int]bool, error) {
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
		if err := w.abandon(ctx, u, plan, token, "source-changed"); err != nil {
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
	if mode := u.dst.UploadChecksumMode(); plan.ChecksumMode != "" && plan.ChecksumMode != mode {
		// The profile's provider or integrity changed since the upload
		// was created: the server would refuse this mode's parts or
		// Complete on every attempt (an upload created with a CRC32C
		// algorithm must complete with every part's; one created
		// without must complete without). A plan without a mode (an
		// older ferry's) resumes as that ferry did, assuming it
		// unchanged. Checked after the listing: an upload already gone
		// (completed by a run whose answer was lost) is recognised
		// above, not uploaded again.
		log.Info("checksum mode changed since the checkpoint; aborting the old upload and starting over",
			zap.String("was", plan.ChecksumMode), zap.String("now", mode))
		if err := w.abandon(ctx, u, plan, token, "checksum-mode-changed"); err != nil {
			return nil, "", nil, err
		}
		return start()
	}
	want := make(map[int]checkpoint.Part, len(ck.Parts))
	for _, p := range ck.Parts {
		want[p.Number] = p
	}
	var agreed []storage.Part
	skip := map[int]bool{}
	for _, p := range listed {
		c, ok := want[p.Number]
		// A part whose checksum the checkpoint lacks (an older ferry's)
		// is sent again when the object's checksum must be proven: the
		// combined checksum needs every part's, and a source checked by
		// its ETag holds each finished part to it (see uploadOwned).
		if ok && c.ETag == p.ETag && (c.Checksum != "" || (plan.Checksum == "" && u.src.etagCheck == nil)) {
			if c.Checksum != "" {
				p.Checksum = c.Checksum // else the server's, where it lists one
			}
			agreed = append(agreed, p)
			skip[p.Number] = true
		}
	}
	w.metrics.partsResumed(len(agreed), len(ck.Parts)-len(agreed))
	log.Info("resuming upload from its checkpoint", zap.Int("parts_done", len(agreed)),
		zap.Int("parts_checkpointed", len(ck.Parts)), zap.Int("parts_listed", len(listed)))
	mu := storage.NewMultipartUpload(u.key, plan.UploadID, plan.PartSize, agreed)
	mu.Checksum = plan.Checksum
	return mu, plan.UploadID, skip, nil
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
	meta := withTaskID(u.metadata, u.taskID)
	if meta[storage.MetaChecksum] == "" && u.src.checksum != nil && u.integrity {
		// Metadata is fixed when the upload starts, so the object's
		// checksum must be known now: a file is hashed first (one more
		// read of it, see docs/performance.md for the cost). The parts'
		// checksums must then combine to it, or Complete refuses them.
		sum, err := u.src.checksum(ctx)
		if err != nil {
			return nil, fmt.Errorf("checksum %s: %w", u.src.display, err)
		}
		meta[storage.MetaChecksum] = sum.String()
	}
	mu, err := u.dst.StartMultipartUpload(ctx, u.key, &storage.MultipartOptions{Headers: u.headers, Metadata: meta, PartSize: ps,
		Tracker: w.registrar(u.taskID, u.profile, u.dst.Bucket())})
	if err != nil {
		return nil, err
	}
	w.metrics.checkpointOp("create")
	err = w.ckpt.Create(ctx, u.taskID, checkpoint.Plan{UploadID: mu.UploadID, Profile: u.profile, Bucket: u.dst.Bucket(),
		Key: u.key, PartSize: ps, PartCount: int((u.src.size + ps - 1) / ps), TotalSize: u.src.size,
		Fingerprint: u.src.fingerprint, CreatedAt: time.Now(), Checksum: mu.Checksum, ChecksumMode: u.dst.UploadChecksumMode()})
	if err != nil {
		// Without a plan nobody could resume or abort this upload: abort it now.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if u.dst.AbortMultipartUpload(actx, u.key, mu.UploadID) == nil {
			w.forgetUpload(actx, u.taskID, mu.UploadID)
		}
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
	if uploadID != "" {
		w.forgetUpload(ctx, u.taskID, uploadID)
	}
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
// checkpoint; a shutdown or a transient error keeps both for the retry. A
// run that no longer owns the task (token) leaves both to the newer run.
func (w *Worker) uploadFailed(ctx context.Context, u *upload, uploadID string, token int64, err error) error {
	err = cancelledErr(ctx, err)
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
	case errors.Is(err, storage.ErrIntegrity):
		// The parts do not combine to the object's checksum: one of them
		// holds bytes that were corrupted when read, and which one is
		// unknown. Never resumable: the retry reads everything again.
		reason = "integrity"
	default:
		if state, _ := w.failedState(ctx, err); state == tasks.StateFailed {
			reason = "failed"
		}
	}
	if reason == "" {
		return err
	}
	plan := checkpoint.Plan{UploadID: uploadID, Bucket: u.dst.Bucket(), Key: u.key}
	if aerr := w.abandon(ctx, u, plan, token, reason); aerr != nil {
		if errors.Is(aerr, checkpoint.ErrNotOwner) {
			// The task is the newer run's: this run's failure (a cancel, a
			// permanent error) must not end it, so only the lost ownership
			// is returned, for runOwned to wait for that run. The run's
			// own error is kept as text only (%v, not %w) on purpose:
			// errors.Is must not find errCancelled or SkipRetry in it.
			return fmt.Errorf("%w (this run had stopped: %v)", aerr, err)
		}
		return errors.Join(err, aerr)
	}
	return err
}

// abandon aborts a checkpoint's upload and deletes the checkpoint, fenced
// by token: a run that paused past its ownership's expiry may find the
// task taken over, and the newer run resuming this very upload (Delete's
// upload id guard does not tell them apart). It then touches neither and
// returns an error wrapping checkpoint.ErrNotOwner; when the ownership
// cannot be read it aborts nothing either (the error says why). As with
// the fence before Complete, a pause between the check and the abort is
// not caught.
func (w *Worker) abandon(ctx context.Context, u *upload, plan checkpoint.Plan, token int64, reason string) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := w.ckpt.CheckOwner(actx, u.taskID, token); err != nil {
		if errors.Is(err, checkpoint.ErrNotOwner) {
			u.log.Info("the task belongs to a newer run now; its upload and checkpoint are left to it",
				zap.String("upload_id", plan.UploadID), zap.String("reason", reason))
		}
		return fmt.Errorf("upload %s not aborted: %w", plan.UploadID, err)
	}
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
	w.forgetUpload(actx, u.taskID, plan.UploadID)
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

// checkInterrupt is called between parts (items, listing pages, delete
// batches): it stops the task when the worker shuts down, a user cancelled
// the task, or the run no longer owns it.
func (w *Worker) checkInterrupt(ctx context.Context, taskID string) error {
	if errors.Is(context.Cause(ctx), errCancelled) {
		return errCancelled
	}
	if w.stopping.Load() {
		return errShuttingDown
	}
	if err := w.checkOwner(ctx, taskID); err != nil {
		return err
	}
	return w.checkCancel(ctx, taskID)
}

// transferSpec is what a task asks of one transfer: where the object goes
// and how it is written. The zero value of every field but Dest is the
// worker's default, so a caller names only what its task set.
type transferSpec struct {
	// Dest is the object written: its profile, bucket and key. The storage
	// transfer writes through must be open on Dest's profile and bucket.
	Dest tasks.Location
	// PartSize is the multipart part size, and the largest object sent
	// with one PutObject; 0 is Config.PartSize. It is raised when the
	// source would not fit in 10,000 parts.
	PartSize int64
	// PartConcurrency is how many parts are sent at once; 0 is
	// Config.PartConcurrency.
	PartConcurrency int
	// ContentType replaces the source's Content-Type when not empty;
	// "" keeps the source's.
	ContentType string
	// Metadata is the object's user metadata, under what the source
	// records of itself and ferry's task id (those win); nil is none.
	Metadata map[string]string
}

// transfer moves a file, https or S3 source to dst (open on spec.Dest):
// one PutObject up to a part size, a checkpointed multipart upload above it
// (or a streamed one when the source cannot be read by range). The object
// gets the source's headers, with spec.ContentType (when not empty) in
// place of its Content-Type.
func (w *Worker) transfer(ctx context.Context, id string, t *asynq.Task, prog *progress, src *source, dst transferTarget,
	spec transferSpec) (_ storage.StoredFile, err error) {
	defer src.Close()
	defer func() {
		switch {
		case errors.Is(err, storage.ErrSourceChanged):
			err = w.sourceChanged(ctx, id, err)
		case errors.Is(err, storage.ErrIntegrity) && !storage.IsPermanent(err):
			err = w.integrityFailed(ctx, id, err)
		}
	}()
	hdr := src.headers
	if spec.ContentType != "" {
		hdr.ContentType = spec.ContentType
	}
	dstLoc := spec.Dest
	partSize := cmp.Or(spec.PartSize, w.cfg.PartSize)
	partConc := cmp.Or(spec.PartConcurrency, w.cfg.PartConcurrency)
	meta := withTaskID(mergeMeta(spec.Metadata, src.record), id)
	switch {
	case src.size >= 0 && src.size <= partSize:
		prog.setTotal(src.size, 0)
		f, err := w.putSmall(ctx, src, dst, int(partSize), putSpec{Dest: dstLoc, Headers: hdr, Metadata: meta})
		if err == nil {
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
			Tracker:      w.registrar(id, dstLoc.Profile, dstLoc.Bucket),
			ProgressFunc: func(done, _ int64) { prog.setDone(ctx, done) }})
	}
	return w.runUpload(ctx, &upload{taskID: id, profile: tasks.ProfileName(dstLoc.Profile), dst: dst,
		integrity: dst.Client().Integrity(), key: dstLoc.Key, src: src,
		partSize: partSize, concurrency: partConc, headers: hdr, metadata: meta, prog: prog, log: w.taskLog(ctx, t)})
}

// putSpec is what a one-request write (putSmall) is asked: where the
// object goes and what it records, as the caller resolved them (a
// transfer's headers with its Content-Type, a copy's metadata with ferry's
// record of its source).
type putSpec struct {
	// Dest is the object written: the destination putSmall writes through
	// must be open on Dest's profile and bucket.
	Dest tasks.Location
	// Headers are the object's, as written.
	Headers storage.Headers
	// Metadata is the object's user metadata, as written; nil is none.
	Metadata map[string]string
}

// putSmall writes a source of at most bufSize bytes with one PutObject,
// read first into a buffer of the worker's pool (so memory stays within
// MaxBufferMemory) and checked unchanged before the object becomes visible.
func (w *Worker) putSmall(ctx context.Context, src *source, dst putTarget, bufSize int, spec putSpec) (storage.StoredFile, error) {
	buf, err := w.buffers.Get(ctx, bufSize)
	if err != nil {
		return storage.StoredFile{}, err
	}
	defer w.buffers.Put(buf)
	return w.putSmallIn(ctx, buf, src, dst, spec)
}

// putSmallIn is putSmall in buf, a buffer of the worker's pool the caller
// holds (one that opens its source only once it has the buffer).
func (w *Worker) putSmallIn(ctx context.Context, buf []byte, src *source, dst putTarget, spec putSpec) (storage.StoredFile, error) {
	n, err := readSmall(ctx, src, buf)
	if err != nil {
		return storage.StoredFile{}, fmt.Errorf("read %s: %w", src.display, err)
	}
	if src.expect != nil {
		// What the source records about its bytes (Put checks a recorded
		// CRC32C again; a plain-MD5 ETag only this checks).
		if err := src.expect(buf[:n]); err != nil {
			return storage.StoredFile{}, err
		}
	}
	if err := src.check(); err != nil {
		return storage.StoredFile{}, err
	}
	f, err := dst.Put(ctx, spec.Dest.Key, bytes.NewReader(buf[:n]), &storage.PutOptions{Headers: spec.Headers, Metadata: spec.Metadata})
	if err == nil {
		w.metrics.addBytes("upload", spec.Dest.Profile, f.Size)
	}
	return f, err
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
