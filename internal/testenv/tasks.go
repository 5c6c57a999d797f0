package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/tasks"
)

// Enqueue enqueues the (task, error) pair of a tasks.NewXxxTask
// constructor on queue and returns the task's id; a constructor error or a
// refused enqueue fails t. opts come after the queue, so they may override
// it.
func Enqueue(t testing.TB, c *tasks.Client, queue string, task *asynq.Task, err error, opts ...asynq.Option) string {
	t.Helper()
	if err != nil {
		t.Fatalf("new task: %v", err)
	}
	info, err := c.Enqueue(context.Background(), task, append([]asynq.Option{asynq.Queue(queue)}, opts...)...)
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return info.ID
}

// WaitTask follows the task's progress (tasks.Client.Watch) until it ends
// and returns its last progress; a task that has not ended within timeout
// fails t.
func WaitTask(t testing.TB, c *tasks.Client, id string, timeout time.Duration) tasks.Progress {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ch, err := c.Watch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var last tasks.Progress
	for p := range ch {
		last = p
	}
	if !last.State.Terminal() {
		t.Fatalf("task %s did not end within %s: last progress %+v", id, timeout, last)
	}
	return last
}
