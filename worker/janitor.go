package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// janitorLoop enqueues a janitor task every JanitorInterval. Unique makes
// one run per interval across the whole fleet, whichever worker enqueues it.
func (w *Worker) janitorLoop(ctx context.Context) {
	if w.cfg.JanitorInterval < 0 {
		return
	}
	queue := "default"
	for q := range w.cfg.Queues {
		queue = q
		break
	}
	t := time.NewTicker(w.cfg.JanitorInterval)
	defer t.Stop()
	for {
		_, err := w.client.Enqueue(ctx, tasks.NewJanitorTask(asynq.Queue(queue), asynq.Unique(w.cfg.JanitorInterval)))
		if err != nil && !errors.Is(err, asynq.ErrDuplicateTask) && ctx.Err() == nil {
			w.log.Warn("could not enqueue the janitor", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// JanitorReport is the result of a janitor run.
type JanitorReport struct {
	// Buckets and Uploads count the buckets listed and the multipart
	// uploads in progress found there.
	Buckets int `json:"buckets"`
	Uploads int `json:"uploads"`
	// Aborted counts ferry's orphans aborted.
	Aborted int `json:"aborted"`
	// Foreign counts uploads in progress that ferry did not create (no
	// registry entry or checkpoint names them): never touched.
	Foreign int `json:"foreign"`
	// Live counts ferry's uploads kept because their task may still run
	// (or is younger than the TTL).
	Live int `json:"live"`
	// StaleCheckpoints counts checkpoints whose task is gone or archived;
	// their uploads are aborted like any of ferry's orphans.
	StaleCheckpoints int      `json:"stale_checkpoints"`
	Errors           []string `json:"errors,omitempty"`
}

// intentSkew is how far from the time its intent was recorded (by the
// worker's clock) the server may date an upload (by its own) and still have
// the upload taken for that intent's: the upload is created right after the
// intent, so anything outside the window (an upload of another application
// on the same key days later) is not the intent's.
const intentSkew = 5 * time.Minute

func (w *Worker) handleJanitor(ctx context.Context, t *asynq.Task) error {
	r, err := w.Janitor(ctx, w.cfg.JanitorUploadTTL)
	if err != nil {
		return err
	}
	writeResult(t, r)
	return nil
}

// Janitor aborts ferry's own orphaned multipart uploads: those the upload
// registry or a checkpoint names, whose owner task is no longer pending,
// scheduled, retrying or active in asynq, and that are older than ttl (a
// cancelled task's at once). Every other upload is left alone: another
// application's in a shared bucket (counted as Foreign), and a live one,
// checkpointed or not. When Redis cannot tell whether a task is alive, or
// the registry or checkpoints cannot be read, it aborts nothing.
func (w *Worker) Janitor(ctx context.Context, ttl time.Duration) (JanitorReport, error) {
	return w.janitor(ctx, ttl, "")
}

// janitor is Janitor; with only set, for that task's uploads alone (a task
// cancelled while not running: see onCancel), listing only the buckets it
// uploaded to. The rules are the same: the whole registry is read, so an
// upload another task recorded, or one two intents could own, is never
// taken for only's.
func (w *Worker) janitor(ctx context.Context, ttl time.Duration, only string) (JanitorReport, error) {
	var rep JanitorReport
	mine := func(task string) bool { return only == "" || task == only }
	cks, reg, _, err := w.janitorRecords(ctx)
	if err != nil {
		return rep, err
	}
	if only != "" {
		has := false
		for _, c := range cks {
			has = has || c.TaskID == only
		}
		for _, e := range reg {
			has = has || e.Task == only
		}
		if !has || w.taskAlive(only) {
			return rep, nil // nothing recorded for it, or it may still run
		}
	}
	firstRead := map[string]bool{} // registry entries read before the listing
	for _, e := range reg {
		firstRead[e.field] = true
	}
	cutoff := time.Now().Add(-ttl)
	alive := map[string]bool{}
	// orphan reports whether task's upload made at created may be aborted.
	orphan := func(task string, created time.Time) bool {
		a, ok := alive[task]
		if !ok {
			a = w.taskAlive(task)
			alive[task] = a
		}
		if a {
			return false
		}
		return created.Before(cutoff) || w.cancelledFlag(ctx, task)
	}
	known := map[string]bool{} // upload ids ferry created
	buckets := map[string]bool{}
	record := func(cks []checkpoint.Checkpoint, reg []registeredUpload) {
		for _, c := range cks {
			known[c.Plan.UploadID] = true
			if mine(c.TaskID) {
				buckets[tasks.ProfileName(c.Plan.Profile)+"\x00"+c.Plan.Bucket] = true
			}
		}
		for _, e := range reg {
			if e.UploadID != "" {
				known[e.UploadID] = true
			}
			if mine(e.Task) {
				buckets[e.Profile+"\x00"+e.Bucket] = true
			}
		}
	}
	record(cks, reg)
	if only == "" {
		scanned, err := w.rdb.SMembers(ctx, janitorBucketsKey).Result()
		if err != nil {
			return rep, fmt.Errorf("janitor (nothing aborted): %w", err)
		}
		for _, b := range scanned {
			buckets[b] = true
		}
	}
	if w.beforeJanitorList != nil {
		w.beforeJanitorList()
	}
	// List every bucket first: foreign uploads are counted there, and an
	// intent's upload (its id never recorded) is found there.
	listed := map[string][]storage.Upload{}
	for pb := range buckets {
		profile, bucket, _ := strings.Cut(pb, "\x00")
		s, err := w.profiles.open(ctx, profile, bucket)
		if err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			continue
		}
		ups, err := s.ListMultipartUploads(ctx, "")
		if err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			continue
		}
		rep.Buckets++
		rep.Uploads += len(ups)
		listed[pb] = ups
	}
	// Read the registry and checkpoints again, after the listing: an upload
	// started since the first read is in the listing, and its task recorded
	// its intent (and maybe its id) before creating it, so it is here now.
	// Judged by the first read it would be foreign, or worse the upload of
	// another, gone task's intent on the same key — and aborted. Ids from
	// both reads are ferry's (one gone since completed or was aborted);
	// what to abort is decided on this read. A bucket first seen here was
	// not listed: its intents wait for the next run.
	cks, reg, bad, err := w.janitorRecords(ctx)
	if err != nil {
		return rep, err
	}
	record(cks, reg)
	if bad > 0 && only == "" {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d unreadable registry entries skipped", bad))
	}
	checkpointed := map[string]bool{} // upload ids a checkpoint names
	for _, c := range cks {
		checkpointed[c.Plan.UploadID] = true
	}
	// claims maps an unrecorded upload id to the intents (indices in reg)
	// whose key and time window it fits. Only an upload exactly one intent
	// claims is that intent's: one two intents could own (a live task's
	// among them) is aborted by neither.
	claims := map[string][]int{}
	for i, e := range reg {
		if e.UploadID != "" {
			continue
		}
		for _, u := range listed[e.Profile+"\x00"+e.Bucket] {
			if u.Key == e.Key && !known[u.UploadID] &&
				!u.Initiated.Before(e.Created.Add(-intentSkew)) && !u.Initiated.After(e.Created.Add(intentSkew)) {
				claims[u.UploadID] = append(claims[u.UploadID], i)
			}
		}
	}
	for _, ups := range listed {
		for _, u := range ups {
			if !known[u.UploadID] && len(claims[u.UploadID]) == 0 {
				rep.Foreign++
			}
		}
	}
	abort := func(profile, bucket, key, uploadID, why string) bool {
		s, err := w.profiles.open(ctx, profile, bucket)
		if err == nil {
			err = s.AbortMultipartUpload(ctx, key, uploadID)
		}
		if err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			return false
		}
		rep.Aborted++
		w.metrics.uploadAborted("janitor")
		w.log.Info("janitor aborted an orphaned upload of ferry's", zap.String("bucket", bucket), zap.String("key", key),
			zap.String("upload_id", uploadID), zap.String("why", why))
		return true
	}
	aborted := map[string]bool{}
	for _, c := range cks {
		if !mine(c.TaskID) {
			continue
		}
		// A checkpoint outlives its task when the task was archived or
		// deleted without the worker aborting (a crash on the last
		// attempt, a worker of an older ferry): its upload is an orphan.
		if !orphan(c.TaskID, c.Plan.CreatedAt) {
			rep.Live++
			continue
		}
		rep.StaleCheckpoints++
		if !abort(tasks.ProfileName(c.Plan.Profile), c.Plan.Bucket, c.Plan.Key, c.Plan.UploadID, "stale checkpoint of task "+c.TaskID) {
			continue
		}
		aborted[c.Plan.UploadID] = true
		w.metrics.checkpointOp("delete")
		if err := w.ckpt.Delete(ctx, c.TaskID, c.Plan.UploadID); err != nil && !errors.Is(err, checkpoint.ErrPlanMismatch) {
			rep.Errors = append(rep.Errors, err.Error())
		}
	}
	for i, e := range reg {
		if !mine(e.Task) {
			continue
		}
		if e.UploadID != "" && aborted[e.UploadID] {
			w.rdb.HDel(ctx, uploadsKey, e.field)
			continue
		}
		if e.UploadID != "" && checkpointed[e.UploadID] {
			continue // its checkpoint decided above
		}
		if !orphan(e.Task, e.Created) {
			rep.Live++
			continue
		}
		ok := true
		if e.UploadID != "" {
			ok = abort(e.Profile, e.Bucket, e.Key, e.UploadID, "task "+e.Task+" is gone")
		} else {
			// The worker stopped between creating the upload and recording
			// its id: the uploads this intent alone claimed are its.
			for _, u := range listed[e.Profile+"\x00"+e.Bucket] {
				if c := claims[u.UploadID]; len(c) == 1 && c[0] == i && !aborted[u.UploadID] {
					if abort(e.Profile, e.Bucket, e.Key, u.UploadID, "unrecorded upload of task "+e.Task) {
						aborted[u.UploadID] = true
					} else {
						ok = false
					}
				}
			}
			if _, listedOK := listed[e.Profile+"\x00"+e.Bucket]; !listedOK || !firstRead[e.field] {
				// Its bucket could not be listed, or the intent is newer
				// than the listing (its upload may come after it): look
				// again next time.
				ok = false
			}
		}
		if ok {
			if err := w.rdb.HDel(ctx, uploadsKey, e.field).Err(); err != nil {
				rep.Errors = append(rep.Errors, err.Error())
			}
		}
	}
	w.log.Info("janitor done", zap.String("only_task", only), zap.Int("buckets", rep.Buckets), zap.Int("uploads", rep.Uploads), zap.Int("aborted", rep.Aborted),
		zap.Int("foreign", rep.Foreign), zap.Int("live", rep.Live), zap.Int("stale_checkpoints", rep.StaleCheckpoints),
		zap.Int("errors", len(rep.Errors)))
	return rep, nil
}

// checkpointIndex is what the janitor uses of the checkpoint store
// (*checkpoint.Store): every checkpoint, and deleting one whose upload it
// aborted.
type checkpointIndex interface {
	List(ctx context.Context) ([]checkpoint.Checkpoint, error)
	Delete(ctx context.Context, taskID, uploadID string) error
}

// janitorRecords reads what names ferry's uploads: the checkpoints and the
// upload registry (with its count of unreadable entries).
func (w *Worker) janitorRecords(ctx context.Context) ([]checkpoint.Checkpoint, []registeredUpload, int, error) {
	cks, err := w.ckpt.List(ctx)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("janitor: list checkpoints (nothing aborted): %w", err)
	}
	reg, bad, err := w.registeredUploads(ctx)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("janitor (nothing aborted): %w", err)
	}
	return cks, reg, bad, nil
}

// cancelledFlag reports whether a user cancelled task (its cancel flag is
// set); false when Redis cannot tell.
func (w *Worker) cancelledFlag(ctx context.Context, task string) bool {
	c, err := tasks.Cancelled(ctx, w.rdb, task)
	return err == nil && c
}

// taskAlive reports whether the task may still run: pending, scheduled,
// active or waiting to retry in some queue. When Redis cannot tell, it
// answers true, so nothing is aborted on a guess.
func (w *Worker) taskAlive(id string) bool {
	queues, err := w.insp.Queues()
	if err != nil {
		return true
	}
	for _, q := range queues {
		ti, err := w.insp.GetTaskInfo(q, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
			continue
		case err != nil:
			return true
		}
		return ti.State != asynq.TaskStateArchived && ti.State != asynq.TaskStateCompleted
	}
	return false
}
