package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
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

// Progress is the last known state of a task: the one shape of progress.
// It is stored in the hash ProgressKey(TaskID) (see Fields), published on
// ProgressChannel as JSON, and printed as is by `ferry status --json` and the
// dashboard's API. Its JSON tags are also its hash field names (progressCodec),
// so adding a field is one edit here: a field of a type the codec does not
// know fails TestProgressFieldsRoundTrip.
type Progress struct {
	// TaskID is the asynq task id. The hash key holds it (hash:"-").
	TaskID string `json:"task_id" hash:"-"`
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
	// PartsResumed are the part numbers this run found done in its
	// checkpoint (an earlier attempt uploaded them), and PartsActive the
	// parts being sent now: part lists as FormatParts writes them
	// ("1-40,43"), empty when none.
	PartsResumed string `json:"parts_resumed,omitempty"`
	PartsActive  string `json:"parts_active,omitempty"`
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
	// ResumedCounters are the Counters when this run started (a migration
	// resumed after a crash or a deploy): this run's own work is Counters
	// minus these, which rates are computed from. Absent on a fresh start.
	ResumedCounters map[string]int64 `json:"resumed_counters,omitempty"`
}

// Fields is p as hash fields for HSET, one per field of Progress but TaskID,
// named by its JSON name. Every field is written, empty ones included, so the
// hash always holds exactly the last value: integers and floats in decimal,
// times RFC3339Nano ("" when zero), anything else (counters) as JSON (""
// when empty).
func (p Progress) Fields() map[string]any {
	v := reflect.ValueOf(p)
	out := make(map[string]any, len(progressCodec))
	for _, f := range progressCodec {
		out[f.name] = f.format(v.Field(f.index))
	}
	return out
}

// ParseProgress parses the hash written from Fields. Missing or empty fields
// are zero, and fields it does not know are ignored (a newer worker's, in a
// rolling upgrade); malformed ones are an error naming the field.
func ParseProgress(taskID string, h map[string]string) (Progress, error) {
	p := Progress{TaskID: taskID}
	v := reflect.ValueOf(&p).Elem()
	var errs []error
	for _, f := range progressCodec {
		if s := h[f.name]; s != "" {
			if err := f.parse(s, v.Field(f.index)); err != nil {
				errs = append(errs, fmt.Errorf("field %s: %w", f.name, err))
			}
		}
	}
	if p.State == "" {
		errs = append(errs, errors.New("no state field"))
	}
	if err := errors.Join(errs...); err != nil {
		return p, fmt.Errorf("progress of %s: %w", taskID, err)
	}
	return p, nil
}

// progressField is the hash encoding of one field of Progress.
type progressField struct {
	name   string // hash field: the JSON name
	index  int    // in Progress
	format func(reflect.Value) string
	parse  func(string, reflect.Value) error
}

// progressCodec is the hash encoding of Progress, derived from its JSON tags.
// The field names are those workers have always written, so old and new
// workers and dashboards read each other's hashes.
var progressCodec = newProgressCodec(reflect.TypeFor[Progress]())

var timeType = reflect.TypeFor[time.Time]()

// newProgressCodec builds the codec of t's fields. It panics on a field type
// it cannot encode: a programming error, caught by any test of the package.
func newProgressCodec(t reflect.Type) []progressField {
	var out []progressField
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if sf.Tag.Get("hash") == "-" || name == "-" || !sf.IsExported() {
			continue
		}
		if name == "" {
			panic(fmt.Sprintf("tasks: Progress.%s needs a json tag: it names the hash field", sf.Name))
		}
		f := progressField{name: name, index: i}
		switch k := sf.Type.Kind(); {
		case sf.Type == timeType:
			f.format = func(v reflect.Value) string { return formatTime(v.Interface().(time.Time)) }
			f.parse = func(s string, v reflect.Value) error {
				t, err := time.Parse(time.RFC3339Nano, s)
				v.Set(reflect.ValueOf(t))
				return err
			}
		case k == reflect.String:
			f.format = func(v reflect.Value) string { return v.String() }
			f.parse = func(s string, v reflect.Value) error { v.SetString(s); return nil }
		case k == reflect.Int || k == reflect.Int64:
			bits := sf.Type.Bits()
			f.format = func(v reflect.Value) string { return strconv.FormatInt(v.Int(), 10) }
			f.parse = func(s string, v reflect.Value) error {
				n, err := strconv.ParseInt(s, 10, bits)
				v.SetInt(n)
				return err
			}
		case k == reflect.Float64:
			f.format = func(v reflect.Value) string { return strconv.FormatFloat(v.Float(), 'g', -1, 64) }
			f.parse = func(s string, v reflect.Value) error {
				n, err := strconv.ParseFloat(s, 64)
				v.SetFloat(n)
				return err
			}
		case k == reflect.Map || k == reflect.Slice:
			f.format = func(v reflect.Value) string {
				if v.Len() == 0 {
					return ""
				}
				b, err := json.Marshal(v.Interface())
				if err != nil {
					panic(fmt.Sprintf("tasks: encode progress field %s: %v", name, err))
				}
				return string(b)
			}
			f.parse = func(s string, v reflect.Value) error { return json.Unmarshal([]byte(s), v.Addr().Interface()) }
		default:
			panic(fmt.Sprintf("tasks: Progress.%s: no hash encoding for %s; add one to newProgressCodec", sf.Name, sf.Type))
		}
		out = append(out, f)
	}
	return out
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// PublishProgress stores p in its hash and publishes it on ProgressChannel,
// in one pipeline. A terminal state's hash expires after ttl
// (DefaultProgressTTL when ttl <= 0); other states get a 7-day safety expiry,
// renewed by every update. A zero UpdatedAt is set to now.
func PublishProgress(ctx context.Context, rdb redis.UniversalClient, p Progress, ttl time.Duration) error {
	return PublishProgressMoved(ctx, rdb, p, ttl, 0)
}

// PublishProgressMoved is PublishProgress for the worker running the task:
// moved, the bytes it transferred since its previous update, is added to
// the aggregate throughput (see Throughput) in the same pipeline.
func PublishProgressMoved(ctx context.Context, rdb redis.UniversalClient, p Progress, ttl time.Duration, moved int64) error {
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
		if moved > 0 {
			addThroughput(ctx, pipe, moved, p.UpdatedAt)
		}
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
	if info.State == asynq.TaskStateArchived || info.State == asynq.TaskStateCompleted {
		// A run publishes its final state before asynq records its end:
		// a task that ended between the two reads has its hash now, with
		// the state asynq cannot tell (cancelled) and its real error.
		if h, err := c.rdb.HGetAll(ctx, ProgressKey(taskID)).Result(); err == nil && len(h) > 0 {
			return ParseProgress(taskID, h)
		}
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
// value (when known), then every update published for them, through one
// ProgressFeed. A value that does not supersede the last one sent
// (Progress.Supersedes) is dropped. Redis must answer when Watch is called;
// afterwards the stream survives reconnects (a failover): when the feed
// resubscribes, and every 2 s besides, the progress hashes of unfinished
// tasks are re-read, repairing updates missed meanwhile. The channel is
// closed when ctx is done or every task has reached a terminal state. The
// caller must drain the channel or cancel ctx.
func (c *Client) Watch(ctx context.Context, taskIDs ...string) (<-chan Progress, error) {
	if len(taskIDs) == 0 {
		return nil, errors.New("watch: no task ids")
	}
	// Subscribe first, so no update between the read below and the
	// subscription is lost.
	feed, err := SubscribeProgress(ctx, c.rdb)
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	w := &watch{
		watched: make(map[string]bool, len(taskIDs)),
		last:    make(map[string]Progress, len(taskIDs)),
		done:    make(map[string]bool, len(taskIDs)),
	}
	var initial []Progress
	for _, id := range taskIDs {
		if w.watched[id] {
			continue
		}
		w.watched[id] = true
		p, err := c.Progress(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			continue // not enqueued yet: wait for its first update
		case err != nil:
			_ = feed.Close()
			return nil, fmt.Errorf("watch: %w", err)
		}
		initial = append(initial, p)
	}
	out := make(chan Progress, len(w.watched))
	go func() {
		defer close(out)
		defer feed.Close()
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
		// repair re-reads the hashes: messages published while the
		// subscription was down (a Redis failover, a network blip) are
		// lost; the hashes are not.
		repair := func() bool {
			for _, id := range w.pending() {
				p, err := c.Progress(ctx, id)
				if err != nil {
					continue // Redis still away, or not started: next time
				}
				if !send(p) {
					return false
				}
			}
			return true
		}
		for _, p := range initial {
			if !send(p) {
				return
			}
		}
		tick := time.NewTicker(watchRepairInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if !repair() {
					return
				}
			case e, ok := <-feed.C:
				switch {
				case !ok:
					return
				case e.Resubscribed:
					if !repair() {
						return
					}
				case e.Err == nil:
					if !send(e.Progress) {
						return
					}
				}
			}
		}
	}()
	return out, nil
}

// watch is the bookkeeping of one Watch, used by its goroutine only.
type watch struct {
	watched map[string]bool     // the ids asked for
	last    map[string]Progress // the value last sent, per id
	done    map[string]bool     // ids that reached a terminal state
}

// accept reports whether p should be sent, and records it.
func (w *watch) accept(p Progress) bool {
	if !w.watched[p.TaskID] || w.done[p.TaskID] {
		return false
	}
	if last, ok := w.last[p.TaskID]; ok && !p.Supersedes(last) {
		return false
	}
	w.last[p.TaskID] = p
	if p.State.Terminal() {
		w.done[p.TaskID] = true
	}
	return true
}

func (w *watch) finished() bool { return len(w.done) == len(w.watched) }

// pending returns the watched ids not yet in a terminal state.
func (w *watch) pending() []string {
	ids := make([]string, 0, len(w.watched)-len(w.done))
	for id := range w.watched {
		if !w.done[id] {
			ids = append(ids, id)
		}
	}
	return ids
}

// watchRepairInterval is how often Watch re-reads the progress hashes of
// unfinished tasks, besides after each resubscription. Between repairs it
// relies on pub/sub alone.
const watchRepairInterval = 2 * time.Second
