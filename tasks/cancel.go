package tasks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// ErrFinished is returned by Cancel for a task that already completed or was
// archived: there is nothing left to cancel.
var ErrFinished = errors.New("task already finished")

// cancelFlagTTL bounds how long a cancel flag outlives its task.
const cancelFlagTTL = 7 * 24 * time.Hour

// CancelledError is the error text of a task cancelled by a user, as written
// to its progress.
const CancelledError = "cancelled by user"

// Cancel cancels the task id. asynq's Inspector.CancelProcessing always ends
// in a retry, so ferry sets its own flag (CancelKey, published on
// CancelChannel) that the running handler watches: it aborts the transfer and
// fails the task with SkipRetry. A task that is not running yet (pending,
// scheduled, retry) is archived at once and its progress set to cancelled.
//
// Cancel returns ErrNotFound when asynq does not know the id, and ErrFinished
// when the task already completed or was archived.
func (c *Client) Cancel(ctx context.Context, taskID string) error {
	info, err := c.findTask(taskID)
	if err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	switch info.State {
	case asynq.TaskStateCompleted, asynq.TaskStateArchived:
		return fmt.Errorf("cancel %s: %w (%s)", taskID, ErrFinished, info.State)
	}
	// The flag first: if the task starts between the lookup and the archive
	// below, its handler sees the flag.
	_, err = c.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.Set(ctx, CancelKey(taskID), "1", cancelFlagTTL)
		pipe.Publish(ctx, CancelChannel, taskID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("cancel %s: set flag: %w", taskID, err)
	}
	if info.State == asynq.TaskStateActive {
		return nil // the handler takes it from here
	}
	if err := c.inspector.ArchiveTask(info.Queue, taskID); err != nil {
		// It may have started meanwhile: then the flag does the job.
		if now, ferr := c.inspector.GetTaskInfo(info.Queue, taskID); ferr == nil && now.State == asynq.TaskStateActive {
			return nil
		}
		return fmt.Errorf("cancel %s: archive in queue %q: %w", taskID, info.Queue, err)
	}
	p := progressFromInfo(info)
	p.State, p.Error, p.UpdatedAt = StateCancelled, CancelledError, time.Now()
	if err := PublishProgress(ctx, c.rdb, p, 0); err != nil {
		return fmt.Errorf("cancel %s: archived, but %w", taskID, err)
	}
	return nil
}

// Cancelled reports whether the task id has been cancelled (its CancelKey is
// set). Handlers check it between parts.
func Cancelled(ctx context.Context, rdb redis.UniversalClient, taskID string) (bool, error) {
	n, err := rdb.Exists(ctx, CancelKey(taskID)).Result()
	if err != nil {
		return false, fmt.Errorf("read cancel flag of %s: %w", taskID, err)
	}
	return n > 0, nil
}
