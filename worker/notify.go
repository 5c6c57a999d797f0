package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/webhook"
)

// Completion webhooks. When a transfer ends under asynq (completed, failed
// for good, cancelled), notifyOnEnd enqueues a ferry:notify task in the
// transfer's queue before the handler returns, so the delivery is in Redis
// before asynq marks the transfer done: a worker killed after that still
// leaves the delivery queued, and a transfer never waits for a receiver.
// handleNotify delivers it: one signed POST per attempt, retried with
// notifyDelay for hours.

// notifyMaxBody bounds how much of a receiver's answer is read; the rest
// is dropped with the connection.
const notifyMaxBody = 64 << 10

// notifyMaxRetryDelay caps the doubling of WebhookRetryDelay.
const notifyMaxRetryDelay = time.Hour

// webhooks is the worker's delivery side.
type webhooks struct {
	allow   *webhook.Allowlist
	secrets [][]byte
	client  *http.Client
}

func newWebhooks(cfg Config) *webhooks {
	allow, _ := webhook.ParseAllowlist(cfg.WebhookAllow) // validated in New
	return &webhooks{allow: allow, secrets: cfg.WebhookSecrets, client: webhook.NewClient(allow, cfg.WebhookTimeout)}
}

// endingKey is the context key of a run's *ending.
type endingKey struct{}

// ending is what a transfer's run leaves for its notification: its result
// (a storage.StoredFile for object transfers) and the final progress it
// published (zero when the run published none).
type ending struct {
	result   any
	progress tasks.Progress
}

// recordEnd keeps res and p for the run's notification, if one is watching.
func recordEnd(ctx context.Context, res any, p tasks.Progress) {
	if e, ok := ctx.Value(endingKey{}).(*ending); ok {
		e.result, e.progress = res, p
	}
}

// notifies reports whether a task type sends completion webhooks.
func notifies(typ string) bool {
	switch typ {
	case tasks.TypePut, tasks.TypeUpload, tasks.TypeCopy, tasks.TypeMove, tasks.TypeDelete, tasks.TypeMigrate, tasks.TypeBatch:
		return true
	}
	return false
}

// endState is the webhook state a run ending with err leaves the task in,
// or "" when the task will run again (failedState decides).
func (w *Worker) endState(ctx context.Context, err error) string {
	if err == nil {
		return webhook.StateCompleted
	}
	switch state, _ := w.failedState(ctx, err); state {
	case tasks.StateCancelled:
		return webhook.StateCancelled
	case tasks.StateFailed:
		return webhook.StateFailed
	}
	return ""
}

// notifyOnEnd enqueues the notification of a transfer that ends in this
// run, or wakes the migration a batch or copy that ends belongs to (see
// waitForChild). Only asynq's runs notify: a takeover run that completes an upload is
// followed by asynq's own run of the task, which finds it done and notifies
// then (a transfer ends once, for asynq).
func (w *Worker) notifyOnEnd(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, ok := asynq.GetTaskID(ctx)
		if !ok || !notifies(t.Type()) {
			return next.ProcessTask(ctx, t)
		}
		end := &ending{}
		start := time.Now()
		err := next.ProcessTask(context.WithValue(ctx, endingKey{}, end), t)
		state := w.endState(ctx, err)
		if state == "" {
			return err
		}
		var ends transferEnds
		_ = json.Unmarshal(t.Payload(), &ends) // a payload that does not decode has no notify
		if ends.Migration != "" {
			// The migration notifies once for all of its copies; it
			// counts this one's end at once.
			w.wakeMigration(ctx, ends.Migration, id)
			return err
		}
		w.enqueueNotify(ctx, t, id, state, ends, end, err, start)
		return err
	})
}

// transferEnds is what a notification needs of a transfer's payload.
type transferEnds struct {
	Notify       *tasks.Notify
	Source, Dest tasks.Location
	// Migration is set on the copies a migration enqueues: the migration
	// notifies once for all of them.
	Migration string
}

// notifyTarget is the notify URL of a transfer: its own, else its queue's
// default, else its destination profile's; "" when none.
func (w *Worker) notifyTarget(p transferEnds, queue string) string {
	switch {
	case p.Notify != nil:
		return p.Notify.URL
	case w.cfg.WebhookQueueDefaults[queue] != "":
		return w.cfg.WebhookQueueDefaults[queue]
	}
	return w.cfg.WebhookProfileDefaults[tasks.ProfileName(p.Dest.Profile)]
}

// display is l as progress shows it; "" for no location.
func display(l tasks.Location) string {
	if l.Kind() == tasks.KindInvalid {
		return ""
	}
	return l.String()
}

// enqueueNotify enqueues the delivery of the transfer's end. A failure is
// logged, never returned: the transfer's outcome stands either way.
func (w *Worker) enqueueNotify(ctx context.Context, t *asynq.Task, id, state string, ends transferEnds, end *ending, runErr error, runStart time.Time) {
	queue, _ := asynq.GetQueueName(ctx)
	target := w.notifyTarget(ends, queue)
	if target == "" {
		return
	}
	log := w.log.With(zap.String("task_id", id), zap.String("event", webhook.EventID(id, state)))
	p, result := end.progress, end.result
	retries, _ := asynq.GetRetryCount(ctx)
	now := time.Now().UTC()
	ev := webhook.Event{TaskID: id, ID: id, Type: t.Type(), State: state, Queue: queue, Source: p.Source, Dest: p.Dest,
		Size: p.BytesTotal, BytesDone: p.BytesDone, Retries: retries, StartedAt: p.StartedAt, FinishedAt: now}
	if ev.StartedAt.IsZero() {
		ev.StartedAt = runStart.UTC()
	}
	if ev.Source == "" && ev.Dest == "" {
		// The run failed before it wrote any progress.
		ev.Source, ev.Dest = display(ends.Source), display(ends.Dest)
	}
	ev.DurationSeconds = now.Sub(ev.StartedAt).Seconds()
	switch f := result.(type) {
	case storage.StoredFile:
		ev.Size, ev.ETag = f.Size, f.ETag
	case *storage.StoredFile:
		if f != nil {
			ev.Size, ev.ETag = f.Size, f.ETag
		}
	case *tasks.BatchResult:
		if f != nil {
			ev.Size, ev.BytesDone = f.Bytes, f.Bytes
		}
	}
	if ev.Size == 0 && state == webhook.StateCompleted {
		ev.Size = ev.BytesDone
	}
	if runErr != nil {
		ev.Error = runErr.Error()
	}
	task, err := tasks.NewNotifyTask(tasks.NotifyPayload{URL: target, Event: ev}, asynq.Queue(queue))
	if err != nil {
		// Only a URL of a malformed shape gets here (a default is checked
		// at start, a payload's at enqueue): nothing can be delivered.
		log.Error("webhook not enqueued: its URL is malformed", zap.Error(err))
		return
	}
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	info, err := w.client.Enqueue(ectx, task)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		log.Debug("webhook already enqueued by an earlier run")
	case err != nil && info == nil:
		log.Error("webhook not enqueued", zap.Error(err))
	case err != nil:
		// Enqueued; clearing a stale cancel flag of its id failed.
		log.Warn("webhook enqueued", zap.Error(err))
	default:
		log.Info("webhook enqueued")
	}
}

// notifyDelay is the delay before retry n of a delivery: WebhookRetryDelay
// doubled n times, up to an hour, plus up to 10% jitter so receivers coming
// back are not hit by every retry at once.
func (w *Worker) notifyDelay(n int) time.Duration {
	d := w.cfg.WebhookRetryDelay << min(n, 20)
	if d <= 0 || d > notifyMaxRetryDelay {
		d = notifyMaxRetryDelay
	}
	return d + time.Duration(rand.Int64N(int64(d/10)+1))
}

// deliveryResult is a delivered ferry:notify task's result.
type deliveryResult struct {
	Status  int    `json:"status"`
	URL     string `json:"url"`
	EventID string `json:"event_id"`
}

// handleNotify delivers one webhook attempt. Policy refusals (no secret,
// a host off the allowlist, a special address) are permanent; any other
// failure, including a non-2xx answer, is retried. It shows on the
// dashboard as a transfer from the event to the URL.
func (w *Worker) handleNotify(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeNotify(t)
	if err != nil {
		return err
	}
	shown := p.URL
	if u, err := url.Parse(p.URL); err == nil {
		shown = webhook.Redact(u)
	}
	return w.run(ctx, t, p.Event.EventID, shown, func(ctx context.Context, _ string, prog *progress) (any, error) {
		if len(w.webhooks.secrets) == 0 {
			return nil, permanent(errors.New("this worker has no webhook signing secret: set FERRY_WEBHOOK_SECRET or FERRY_WEBHOOK_SECRET_FILE (and webhook_allow)"))
		}
		if _, err := w.webhooks.allow.CheckURL(p.URL); err != nil {
			return nil, permanent(err)
		}
		body, err := json.Marshal(p.Event)
		if err != nil {
			return nil, permanent(fmt.Errorf("encode event: %w", err))
		}
		prog.setTotal(int64(len(body)), 0)
		status, err := w.deliver(ctx, p.URL, p.Event.EventID, body)
		if err != nil {
			return nil, fmt.Errorf("deliver %s to %s: %w", p.Event.EventID, shown, err)
		}
		prog.add(ctx, int64(len(body)), 0)
		return deliveryResult{Status: status, URL: shown, EventID: p.Event.EventID}, nil
	})
}

// deliver POSTs body, signed now, and returns the 2xx status, or why not.
// Errors never hold the URL's query, the signature or the secret.
func (w *Worker) deliver(ctx context.Context, target, eventID string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, permanent(fmt.Errorf("build the request: %w", webhook.ErrRefused))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ferry-webhook/1")
	req.Header.Set(webhook.EventIDHeader, eventID)
	req.Header.Set(webhook.SignatureHeader, webhook.Sign(body, time.Now(), w.webhooks.secrets...))
	resp, err := w.webhooks.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its text repeats the whole URL, query included
		}
		if errors.Is(err, webhook.ErrRefused) {
			return 0, permanent(err)
		}
		return 0, err
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, notifyMaxBody))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, nil
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return 0, fmt.Errorf("the receiver answered %s: redirects are not followed; configure the final URL", resp.Status)
	}
	return 0, fmt.Errorf("the receiver answered %s%s", resp.Status, excerpt(head))
}

// excerpt is the start of a receiver's answer for an error message:
// printable, at most 200 bytes.
func excerpt(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, string(b[:min(len(b), 200)]))
	if s = strings.TrimSpace(s); s == "" {
		return ""
	}
	return ": " + s
}
