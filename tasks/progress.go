package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// State is the state of a ferry task as progress reports it.
type State string

// States. Completed, failed and cancelled are terminal.
const (
	StatePending   State = "pending"   // enqueued (or scheduled), not started
	StateActive    State = "active"    // a worker runs it
	StateRetrying  State = "retrying"  // failed, will run again
	StateCompleted State = "completed" // done
	StateFailed    State = "failed"    // archived after a permanent error or the last retry
	StateCancelled State = "cancelled" // cancelled by a user
)

// Terminal reports whether s is a final state.
func (s State) Terminal() bool {
	return s == StateCompleted || s == StateFailed || s == StateCancelled
}

// DefaultProgressTTL is how long PublishProgress keeps the hash of a finished
// task when given no ttl: as long as DefaultRetention keeps the task.
const DefaultProgressTTL = DefaultRetention

// activeProgressTTL is the safety expiry of the hash of a task not yet
// finished, renewed by every update, so a task lost for good cannot leak it.
const activeProgressTTL = 7 * 24 * time.Hour

// Progress is the last known state of a task. It is stored in the hash
// ProgressKey(TaskID) (see Fields) and published on ProgressChannel as JSON.
type Progress struct {
	TaskID string `json:"task_id"`
	Type   string `json:"type,omitempty"`
	State  State  `json:"state"`
	// BytesDone and BytesTotal count bytes; BytesTotal is 0 when unknown.
	BytesDone  int64 `json:"bytes_done"`
	BytesTotal int64 `json:"bytes_total"`
	// PartsDone and PartsTotal count multipart parts; 0 for single puts.
	PartsDone  int `json:"parts_done"`
	PartsTotal int `json:"parts_total"`
	// ResumedFrom is BytesDone when this run resumed a checkpoint; 0 else.
	ResumedFrom int64 `json:"resumed_from,omitempty"`
	// Rate is the recent transfer rate in bytes per second.
	Rate      float64   `json:"rate"`
	StartedAt time.Time `json:"started_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Error is the last error, for retrying, failed and cancelled tasks.
	Error string `json:"error,omitempty"`
	// Source and Dest are display strings (Location.String).
	Source string `json:"source,omitempty"`
	Dest   string `json:"dest,omitempty"`
	// Counters are aggregates of a migrate task (objects copied, skipped...).
	Counters map[string]int64 `json:"counters,omitempty"`
}

// Hash field names of Progress, as the worker writes them.
const (
	fieldType        = "type"
	fieldState       = "state"
	fieldBytesDone   = "bytes_done"
	fieldBytesTotal  = "bytes_total"
	fieldPartsDone   = "parts_done"
	fieldPartsTotal  = "parts_total"
	fieldResumedFrom = "resumed_from"
	fieldRate        = "rate"
	fieldStartedAt   = "started_at"
	fieldUpdatedAt   = "updated_at"
	fieldError       = "error"
	fieldSource      = "source"
	fieldDest        = "dest"
	fieldCounters    = "counters"
)

// Fields is p as hash fields for HSET. Every field is written, empty ones
// included, so the hash always holds exactly the last value: times are
// RFC3339Nano ("" when zero) and counters are JSON ("" when none).
func (p Progress) Fields() map[string]any {
	counters := ""
	if len(p.Counters) > 0 {
		b, _ := json.Marshal(p.Counters) // a map[string]int64 always encodes
		counters = string(b)
	}
	return map[string]any{
		fieldType:        p.Type,
		fieldState:       string(p.State),
		fieldBytesDone:   strconv.FormatInt(p.BytesDone, 10),
		fieldBytesTotal:  strconv.FormatInt(p.BytesTotal, 10),
		fieldPartsDone:   strconv.Itoa(p.PartsDone),
		fieldPartsTotal:  strconv.Itoa(p.PartsTotal),
		fieldResumedFrom: strconv.FormatInt(p.ResumedFrom, 10),
		fieldRate:        strconv.FormatFloat(p.Rate, 'g', -1, 64),
		fieldStartedAt:   formatTime(p.StartedAt),
		fieldUpdatedAt:   formatTime(p.UpdatedAt),
		fieldError:       p.Error,
		fieldSource:      p.Source,
		fieldDest:        p.Dest,
		fieldCounters:    counters,
	}
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// ParseProgress parses the hash written from Fields. Missing or empty fields
// are zero; malformed ones are an error naming the field.
func ParseProgress(taskID string, h map[string]string) (Progress, error) {
	p := Progress{
		TaskID: taskID,
		Type:   h[fieldType],
		State:  State(h[fieldState]),
		Error:  h[fieldError],
		Source: h[fieldSource],
		Dest:   h[fieldDest],
	}
	if p.State == "" {
		return p, fmt.Errorf("progress of %s: no state field", taskID)
	}
	var errs []error
	parseInt := func(field string, dst *int64) {
		if s := h[field]; s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("field %s: %w", field, err))
			}
			*dst = v
		}
	}
	parseTime := func(field string, dst *time.Time) {
		if s := h[field]; s != "" {
			v, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				errs = append(errs, fmt.Errorf("field %s: %w", field, err))
			}
			*dst = v
		}
	}
	var partsDone, partsTotal int64
	parseInt(fieldBytesDone, &p.BytesDone)
	parseInt(fieldBytesTotal, &p.BytesTotal)
	parseInt(fieldPartsDone, &partsDone)
	parseInt(fieldPartsTotal, &partsTotal)
	parseInt(fieldResumedFrom, &p.ResumedFrom)
	p.PartsDone, p.PartsTotal = int(partsDone), int(partsTotal)
	if s := h[fieldRate]; s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("field %s: %w", fieldRate, err))
		}
		p.Rate = v
	}
	parseTime(fieldStartedAt, &p.StartedAt)
	parseTime(fieldUpdatedAt, &p.UpdatedAt)
	if s := h[fieldCounters]; s != "" {
		if err := json.Unmarshal([]byte(s), &p.Counters); err != nil {
			errs = append(errs, fmt.Errorf("field %s: %w", fieldCounters, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return p, fmt.Errorf("progress of %s: %w", taskID, err)
	}
	return p, nil
}

// PublishProgress stores p in its hash and publishes it on ProgressChannel,
// in one pipeline. A terminal state's hash expires after ttl
// (DefaultProgressTTL when ttl <= 0); other states get a 7-day safety expiry,
// renewed by every update. A zero UpdatedAt is set to now.
func PublishProgress(ctx context.Context, rdb redis.UniversalClient, p Progress, ttl time.Duration) error {
	if p.TaskID == "" {
		return errors.New("publish progress: empty task id")
	}
	if p.State == "" {
		return fmt.Errorf("publish progress of %s: empty state", p.TaskID)
	}
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = time.Now()
	}
	msg, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("publish progress of %s: %w", p.TaskID, err)
	}
	expiry := activeProgressTTL
	if p.State.Terminal() {
		expiry = ttl
		if expiry <= 0 {
			expiry = DefaultProgressTTL
		}
	}
	key := ProgressKey(p.TaskID)
	_, err = rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.HSet(ctx, key, p.Fields())
		pipe.Expire(ctx, key, expiry)
		pipe.Publish(ctx, ProgressChannel, msg)
		return nil
	})
	if err != nil {
		return fmt.Errorf("publish progress of %s: %w", p.TaskID, err)
	}
	return nil
}

// PublishProgressIfAbsent is PublishProgress for a value that must not
// overwrite a newer one: it stores and publishes p only when the task has no
// progress hash yet, atomically, and reports whether it did. A producer uses
// it to announce a task it just enqueued (state pending) without racing the
// worker, which may already have started or even finished it.
func PublishProgressIfAbsent(ctx context.Context, rdb redis.UniversalClient, p Progress) (bool, error) {
	if p.TaskID == "" || p.State == "" || p.State.Terminal() {
		return false, fmt.Errorf("publish progress of %q: needs a task id and a non-terminal state", p.TaskID)
	}
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = time.Now()
	}
	msg, err := json.Marshal(p)
	if err != nil {
		return false, fmt.Errorf("publish progress of %s: %w", p.TaskID, err)
	}
	args := []any{int64(activeProgressTTL / time.Second), ProgressChannel, msg}
	for k, v := range p.Fields() {
		args = append(args, k, v)
	}
	n, err := publishIfAbsent.Run(ctx, rdb, []string{ProgressKey(p.TaskID)}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("publish progress of %s: %w", p.TaskID, err)
	}
	return n == 1, nil
}

// publishIfAbsent writes and publishes a progress hash that does not exist.
//
// KEYS[1] progress hash; ARGV[1] expiry in seconds, ARGV[2] channel,
// ARGV[3] message, ARGV[4..] field, value pairs. Returns 1 when written.
var publishIfAbsent = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], unpack(ARGV, 4))
redis.call("EXPIRE", KEYS[1], ARGV[1])
redis.call("PUBLISH", ARGV[2], ARGV[3])
return 1`)

// Progress returns the last progress of the task id. Without a progress hash
// (the task has not started, or its hash expired) it falls back to asynq's
// record of the task, searched in every queue; ErrNotFound when neither knows
// the id.
func (c *Client) Progress(ctx context.Context, taskID string) (Progress, error) {
	h, err := c.rdb.HGetAll(ctx, ProgressKey(taskID)).Result()
	if err != nil {
		return Progress{}, fmt.Errorf("read progress of %s: %w", taskID, err)
	}
	if len(h) > 0 {
		return ParseProgress(taskID, h)
	}
	info, err := c.findTask(taskID)
	if err != nil {
		return Progress{}, err
	}
	return progressFromInfo(info), nil
}

// progressFromInfo maps asynq's record of a task to a Progress.
func progressFromInfo(info *asynq.TaskInfo) Progress {
	p := Progress{TaskID: info.ID, Type: info.Type, Error: info.LastErr}
	switch info.State {
	case asynq.TaskStateActive:
		p.State = StateActive
	case asynq.TaskStateRetry:
		p.State = StateRetrying
	case asynq.TaskStateArchived:
		p.State = StateFailed
	case asynq.TaskStateCompleted:
		p.State = StateCompleted
	default: // pending, scheduled, aggregating
		p.State = StatePending
	}
	// Best effort: every ferry payload with locations names them so.
	var locs struct {
		Source Location `json:"source"`
		Dest   Location `json:"dest"`
		Size   int64    `json:"size"`
	}
	if json.Unmarshal(info.Payload, &locs) == nil {
		if locs.Source.Kind() != KindInvalid {
			p.Source = locs.Source.String()
		}
		if locs.Dest.Kind() != KindInvalid {
			p.Dest = locs.Dest.String()
		}
		p.BytesTotal = locs.Size
	}
	return p
}

// Watch streams the progress of the given tasks: first each one's current
// value (when known), then every update published for them. Updates older
// than a value already sent are dropped. Redis must answer when Watch is
// called; afterwards the stream survives reconnects (a failover): updates
// missed meanwhile are repaired from the progress hashes every 2 s. The
// channel is closed when ctx is done or every task has reached a terminal
// state. The caller must drain the channel or cancel ctx.
func (c *Client) Watch(ctx context.Context, taskIDs ...string) (<-chan Progress, error) {
	if len(taskIDs) == 0 {
		return nil, errors.New("watch: no task ids")
	}
	// Subscribe first, so no update between the read below and the
	// subscription is lost.
	sub := c.rdb.Subscribe(ctx, ProgressChannel)
	if _, err := sub.Receive(ctx); err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("watch: subscribe to %s: %w", ProgressChannel, err)
	}
	w := &watch{
		last: make(map[string]time.Time, len(taskIDs)),
		done: make(map[string]bool, len(taskIDs)),
	}
	var initial []Progress
	for _, id := range taskIDs {
		if _, dup := w.last[id]; dup {
			continue
		}
		w.last[id] = time.Time{}
		p, err := c.Progress(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			continue // not enqueued yet: wait for its first update
		case err != nil:
			_ = sub.Close()
			return nil, fmt.Errorf("watch: %w", err)
		}
		initial = append(initial, p)
	}
	out := make(chan Progress, len(w.last))
	msgs := sub.Channel()
	go func() {
		defer close(out)
		defer sub.Close()
		send := func(p Progress) bool {
			if !w.accept(p) {
				return true
			}
			select {
			case out <- p:
			case <-ctx.Done():
				return false
			}
			return !w.finished()
		}
		for _, p := range initial {
			if !send(p) {
				return
			}
		}
		repair := time.NewTicker(watchRepairInterval)
		defer repair.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-repair.C:
				// Messages published while the subscription was down (a
				// Redis failover, a network blip: go-redis reconnects the
				// subscription by itself) are lost; the hashes are not.
				for _, id := range w.pending() {
					p, err := c.Progress(ctx, id)
					if err != nil {
						continue // Redis still away, or not started: next tick
					}
					if !send(p) {
						return
					}
				}
			case m, ok := <-msgs:
				if !ok {
					return
				}
				var p Progress
				if err := json.Unmarshal([]byte(m.Payload), &p); err != nil {
					continue // not ours to judge; the hash stays readable
				}
				if !send(p) {
					return
				}
			}
		}
	}()
	return out, nil
}

// watch is the bookkeeping of one Watch, used by its goroutine only.
type watch struct {
	last map[string]time.Time // UpdatedAt last sent, per watched id
	done map[string]bool      // ids that reached a terminal state
}

// accept reports whether p should be sent, and records it.
func (w *watch) accept(p Progress) bool {
	last, ok := w.last[p.TaskID]
	if !ok || w.done[p.TaskID] || p.UpdatedAt.Before(last) {
		return false
	}
	w.last[p.TaskID] = p.UpdatedAt
	if p.State.Terminal() {
		w.done[p.TaskID] = true
	}
	return true
}

func (w *watch) finished() bool { return len(w.done) == len(w.last) }

// pending returns the watched ids not yet in a terminal state.
func (w *watch) pending() []string {
	ids := make([]string, 0, len(w.last)-len(w.done))
	for id := range w.last {
		if !w.done[id] {
			ids = append(ids, id)
		}
	}
	return ids
}

// watchRepairInterval is how often Watch re-reads the progress hashes of
// unfinished tasks, to repair updates missed while its subscription was
// reconnecting. Between repairs it relies on pub/sub alone.
const watchRepairInterval = 2 * time.Second
