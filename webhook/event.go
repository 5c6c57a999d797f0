package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Event is the JSON body of a delivery: one transfer that ended.
type Event struct {
	// EventID is unique per transfer and end state ("<id>:<state>"); a
	// receiver drops an EventID it has already processed (delivery is at
	// least once). The same value is in the Ferry-Event-Id header.
	EventID string `json:"event_id"`
	// TaskID is the transfer's task id, named as the HTTP API names it.
	TaskID string `json:"task_id"`
	// ID is TaskID again, under the name events had first: kept for the
	// receivers written then.
	ID string `json:"id"`
	// Type is the task type: "ferry:upload", "ferry:copy", ...
	Type string `json:"type"`
	// State is "completed", "failed" or "cancelled".
	State string `json:"state"`
	// Queue is the asynq queue the transfer ran in.
	Queue string `json:"queue,omitempty"`
	// Source and Dest are display strings ("s3://bucket/key" with the
	// profile, a path, a URL); Source is empty for a delete.
	Source string `json:"source,omitempty"`
	Dest   string `json:"dest,omitempty"`
	// Size is the object's size in bytes when completed; otherwise the
	// bytes the transfer knew it had to move (0 when unknown).
	Size int64 `json:"size"`
	// BytesDone is the bytes moved when the transfer ended.
	BytesDone int64 `json:"bytes_done"`
	// ETag is the stored object's ETag (opaque; a multipart ETag is not an
	// MD5) for a completed put, upload, copy or move.
	ETag string `json:"etag,omitempty"`
	// Error is why a failed or cancelled transfer ended.
	Error string `json:"error,omitempty"`
	// Retries is how many times the transfer was retried before it ended.
	Retries int `json:"retries"`
	// StartedAt is when a worker first started it (zero if it never ran);
	// FinishedAt when it ended; DurationSeconds the difference.
	StartedAt       time.Time `json:"started_at,omitzero"`
	FinishedAt      time.Time `json:"finished_at"`
	DurationSeconds float64   `json:"duration_seconds"`
}

// The end states an Event reports.
const (
	StateCompleted = "completed"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// EventID is the event id of transfer id ending in state.
func EventID(id, state string) string { return id + ":" + state }

// ParseEvent decodes a delivery's body. Unknown fields are allowed: later
// versions of ferry may add some.
func ParseEvent(body []byte) (Event, error) {
	var e Event
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&e); err != nil {
		return Event{}, fmt.Errorf("webhook event: %w", err)
	}
	if e.ID == "" || e.State == "" {
		return Event{}, fmt.Errorf("webhook event: id or state missing")
	}
	return e, nil
}
