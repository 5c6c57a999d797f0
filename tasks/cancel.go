package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/webhook"
)

// ErrFinished is returned by Cancel for a task that already completed or was
// archived: there is nothing left to cancel.
var ErrFinished = errors.New("task already finished")

// cancelFlagTTL bounds how long a cancel flag outlives its task.
const cancelFlagTTL = 7 * 24 * time.Hour

// CancelledError is the error text of a task cancelled by a user, as written
// to its progress.
const CancelledError = "cancelled by user"

// Cancel cancels the task id. It sets ferry's flag (CancelKey) and
// publishes the id on CancelChannel. A running task is stopped at once by
// its worker, which cancels the handler's context: the request in flight is
// dropped, the multipart upload aborted, and the task archived with
// "cancelled by user" (SkipRetry; asynq's Inspector.CancelProcessing alone
// would end in a retry, asynq #968). The flag is the fallback for a missed
// message: handlers check it between parts. A task that is not running
// (pending, scheduled, waiting to retry) is archived here, its progress set
// to cancelled, and a worker aborts the multipart uploads it recorded for it
// (a task that waits to retry may have one) at once.
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
	if err := MarkCancelled(ctx, c.rdb, taskID); err != nil {
		return fmt.Errorf("cancel %s: %w", taskID, err)
	}
	if info.State == asynq.TaskStateActive {
		return c.publishCancel(ctx, taskID) // its worker takes it from here
	}
	if err := c.inspector.ArchiveTask(info.Queue, taskID); err != nil {
		// It may have started meanwhile: then its worker stops it.
		if now, ferr := c.inspector.GetTaskInfo(info.Queue, taskID); ferr == nil && now.State == asynq.TaskStateActive {
			return c.publishCancel(ctx, taskID)
		}
		return fmt.Errorf("cancel %s: archive in queue %q: %w", taskID, info.Queue, err)
	}
	p := progressFromInfo(info)
	p.State, p.Error, p.UpdatedAt = StateCancelled, CancelledError, time.Now()
	if err := PublishProgress(ctx, c.rdb, p, 0); err != nil {
		return fmt.Errorf("cancel %s: archived, but %w", taskID, err)
	}
	if err := c.notifyCancelled(ctx, info, p); err != nil {
		return err
	}
	// Archived: a worker now aborts what the task's earlier runs left.
	return c.publishCancel(ctx, taskID)
}

// publishCancel tells the workers that taskID was cancelled.
func (c *Client) publishCancel(ctx context.Context, taskID string) error {
	if err := c.rdb.Publish(ctx, CancelChannel, taskID).Err(); err != nil {
		return fmt.Errorf("cancel %s: flagged, but telling the workers failed (its run stops at its next part; the janitor aborts its upload): %w", taskID, err)
	}
	return nil
}

// MarkCancelled sets the cancel flag of taskID (CancelKey), for a week.
// Client.Cancel sets it; so does a worker for a task cancelled through
// asynq (asynqmon's Cancel button, Inspector.CancelProcessing).
func MarkCancelled(ctx context.Context, rdb redis.UniversalClient, taskID string) error {
	if err := rdb.Set(ctx, CancelKey(taskID), "1", cancelFlagTTL).Err(); err != nil {
		return fmt.Errorf("set the cancel flag of %s: %w", taskID, err)
	}
	return nil
}

// notifyCancelled enqueues the webhook of a transfer cancelled before it
// ran, when its payload asks for one: no worker handler runs for it. (A
// queue's or profile's default webhook is the workers' configuration,
// unknown here: such transfers are notified only when cancelled running.)
func (c *Client) notifyCancelled(ctx context.Context, info *asynq.TaskInfo, p Progress) error {
	var n struct{ Notify *Notify }
	if json.Unmarshal(info.Payload, &n) != nil || n.Notify == nil {
		return nil
	}
	ev := webhook.Event{TaskID: info.ID, ID: info.ID, Type: info.Type, State: webhook.StateCancelled, Queue: info.Queue,
		Source: p.Source, Dest: p.Dest, Size: p.BytesTotal, Error: CancelledError, Retries: info.Retried,
		FinishedAt: p.UpdatedAt.UTC()}
	task, err := NewNotifyTask(NotifyPayload{URL: n.Notify.URL, Event: ev}, asynq.Queue(info.Queue))
	if err != nil {
		return fmt.Errorf("cancel %s: archived, but its webhook: %w", info.ID, err)
	}
	if _, err := c.client.EnqueueContext(ctx, task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("cancel %s: archived, but enqueueing its webhook failed: %w", info.ID, err)
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
