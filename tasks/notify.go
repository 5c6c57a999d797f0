package tasks

import (
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/webhook"
)

// TypeNotify is the task that delivers one signed completion webhook. The
// worker enqueues it, in the transfer's own queue, when a transfer with a
// notify URL completes, fails for good or is cancelled; Client.Cancel does
// for a transfer cancelled before it started.
const TypeNotify = "ferry:notify"

// NotifyMaxRetry is MaxRetry of a ferry:notify task. With the worker's
// default backoff (10 s doubling up to 1 h) its retries span about 7 hours.
const NotifyMaxRetry = 15

// notifyTimeout bounds one delivery attempt as a task (the HTTP attempt
// itself is bounded by webhook.DefaultTimeout).
const notifyTimeout = time.Minute

// Notify asks for a completion webhook: when the transfer ends, the worker
// POSTs a signed webhook.Event to URL. The host must be on the worker's
// webhook_allow list; the URL is stored in Redis in plain text, so it must
// not hold credentials (user:password@ is refused; the Ferry-Signature
// header authenticates the delivery).
type Notify struct {
	URL string `json:"url"`
}

// validate checks what a producer can check without the worker's
// allowlist: the URL's shape (webhook.ParseURL).
func (n *Notify) validate() error {
	if n == nil {
		return nil
	}
	if _, err := webhook.ParseURL(n.URL); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// NotifyPayload is the payload of TypeNotify: the event to deliver and
// where. It holds no secret: the worker signs each attempt with its own.
type NotifyPayload struct {
	URL   string        `json:"url"`
	Event webhook.Event `json:"event"`
}

// Validate reports what is wrong with p, or nil.
func (p NotifyPayload) Validate() error {
	if _, err := webhook.ParseURL(p.URL); err != nil {
		return fmt.Errorf("url: %w", err)
	}
	switch {
	case p.Event.ID == "":
		return errors.New("event: id is missing")
	case p.Event.State != webhook.StateCompleted && p.Event.State != webhook.StateFailed && p.Event.State != webhook.StateCancelled:
		return fmt.Errorf("event: state %q: want completed, failed or cancelled", p.Event.State)
	}
	return nil
}

// NotifyTaskID is the task id of the delivery of transfer id's end in
// state: one delivery task per transfer and end state, so a handler that
// runs again after a crash does not notify twice while the first delivery's
// record exists (DefaultRetention after it ends).
func NotifyTaskID(id, state string) string { return "notify:" + webhook.EventID(id, state) }

// NewNotifyTask validates p and returns a TypeNotify task with id
// NotifyTaskID and the default options (MaxRetry NotifyMaxRetry, Retention
// 24h, Timeout 1 min), followed by opts. Give it the transfer's queue.
func NewNotifyTask(p NotifyPayload, opts ...asynq.Option) (*asynq.Task, error) {
	if p.Event.EventID == "" {
		p.Event.EventID = webhook.EventID(p.Event.ID, p.Event.State)
	}
	opts = append([]asynq.Option{asynq.TaskID(NotifyTaskID(p.Event.ID, p.Event.State))}, opts...)
	return newTask(TypeNotify, p, NotifyMaxRetry, notifyTimeout, opts)
}

// DecodeNotify decodes and validates a TypeNotify task's payload. Errors
// wrap asynq.SkipRetry.
func DecodeNotify(t *asynq.Task) (NotifyPayload, error) { return decode[NotifyPayload](t, TypeNotify) }
