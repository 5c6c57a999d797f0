package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/tasks"
)

// registerBucket remembers a bucket for the janitor.
func (w *Worker) registerBucket(ctx context.Context, profile, bucket string) {
	if err := w.rdb.SAdd(ctx, janitorBucketsKey, profileName(profile)+"\x00"+bucket).Err(); err != nil {
		w.log.Warn("could not register bucket for the janitor", zap.Error(err))
	}
}

// janitorLoop enqueues a janitor task every JanitorInterval. Unique makes
// one run per interval across the whole fleet, whichever worker enqueues it.
func (w *Worker) janitorLoop(ctx context.Context) {
	if w.cfg.JanitorInterval < 0 {
		return
	}
	client := asynq.NewClientFromRedisClient(w.rdb)
	queue := "default"
	for q := range w.cfg.Queues {
		queue = q
		break
	}
	t := time.NewTicker(w.cfg.JanitorInterval)
	defer t.Stop()
	for {
		_, err := client.EnqueueContext(ctx, tasks.NewJanitorTask(asynq.Queue(queue), asynq.Unique(w.cfg.JanitorInterval)))
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
	Buckets int `json:"buckets"`
	Uploads int `json:"uploads"`
	Aborted int `json:"aborted"`
	// StaleCheckpoints counts checkpoints whose task is gone or archived;
	// their uploads are then aborted like any orphan.
	StaleCheckpoints int      `json:"stale_checkpoints"`
	Errors           []string `json:"errors,omitempty"`
}

func (w *Worker) handleJanitor(ctx context.Context, t *asynq.Task) error {
	r, err := w.Janitor(ctx, w.cfg.JanitorUploadTTL)
	if err != nil {
		return err
	}
	writeResult(t, r)
	return nil
}

// Janitor aborts multipart uploads older than ttl that no live checkpoint
// owns, in every bucket ferry has uploaded to. An upload a checkpoint owns is
// never touched: it may resume. If the checkpoint list may be incomplete it
// aborts nothing.
func (w *Worker) Janitor(ctx context.Context, ttl time.Duration) (JanitorReport, error) {
	var rep JanitorReport
	cks, err := w.ckpt.List(ctx)
	if err != nil {
		return rep, fmt.Errorf("janitor: list checkpoints (nothing aborted): %w", err)
	}
	owned := map[string]bool{}
	buckets := map[string]bool{}
	cutoff := time.Now().Add(-ttl)
	for _, c := range cks {
		buckets[profileName(c.Plan.Profile)+"\x00"+c.Plan.Bucket] = true
		// A checkpoint outlives its task when the task was archived or
		// deleted without the worker aborting (a cancel while waiting to
		// retry, a crash on the last attempt): it owns nothing then.
		if c.Plan.CreatedAt.Before(cutoff) && !w.taskAlive(c.TaskID) {
			rep.StaleCheckpoints++
			w.metrics.checkpointOp("delete")
			if err := w.ckpt.Delete(ctx, c.TaskID, c.Plan.UploadID); err != nil {
				rep.Errors = append(rep.Errors, err.Error())
				owned[c.Plan.UploadID] = true
			}
			continue
		}
		owned[c.Plan.UploadID] = true
	}
	reg, err := w.rdb.SMembers(ctx, janitorBucketsKey).Result()
	if err != nil {
		return rep, fmt.Errorf("janitor: %w", err)
	}
	for _, b := range reg {
		buckets[b] = true
	}
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
		for _, u := range ups {
			rep.Uploads++
			if owned[u.UploadID] || u.Initiated.After(cutoff) {
				continue
			}
			if err := s.AbortMultipartUpload(ctx, u.Key, u.UploadID); err != nil {
				rep.Errors = append(rep.Errors, err.Error())
				continue
			}
			rep.Aborted++
			w.metrics.uploadAborted("janitor")
			w.log.Info("janitor aborted an orphaned upload", zap.String("bucket", bucket), zap.String("key", u.Key),
				zap.String("upload_id", u.UploadID), zap.Time("initiated", u.Initiated))
		}
	}
	return rep, nil
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
