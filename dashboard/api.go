package dashboard

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/ferryhq/ferry/tasks"
)

// Limits of GET /api/transfers?limit=.
const (
	defaultListLimit = 200
	maxListLimit     = 5000
)

// sseHeartbeat is how often an idle event stream gets a comment, so that
// proxies keep it open and a dead client is noticed.
const sseHeartbeat = 15 * time.Second

// subscribeWait bounds how long a new event stream waits for the hub's
// subscription before it starts anyway.
const subscribeWait = 5 * time.Second

// Transfer is a transfer as the API returns it: the Progress fields plus
// what the page derives from them.
type Transfer struct {
	tasks.Progress
	// Percent is 0..100: bytes when BytesTotal is known, else parts; 100
	// once completed.
	Percent float64 `json:"percent"`
	// ETASeconds is the time left at Rate, or 0 when unknown or finished.
	// A migration's is its objects left at ObjectsRate, known once its
	// source is listed to the end.
	ETASeconds float64 `json:"eta_seconds,omitempty"`
	// ObjectsRate is a migration's objects decided (copied, skipped,
	// failed, filtered, ignored) per second over this run.
	ObjectsRate float64 `json:"objects_rate,omitempty"`
}

// migrationDecided are the counters of a migration's objects that need
// nothing more: every listed object ends in one of them.
var migrationDecided = []string{"copied", "skipped", "failed", "filtered", "ignored", "would_copy"}

// DecidedObjects sums the objects of a migration's counters c that need
// nothing more (the CLI's bar per migration counts them too).
func DecidedObjects(c map[string]int64) int64 {
	var n int64
	for _, k := range migrationDecided {
		n += c[k]
	}
	return n
}

// migration derives a migration's percent, objects rate and ETA from its
// counters: objects decided out of listed, at the rate of this run (a
// resumed run's earlier work, ResumedCounters, excluded). Before the
// source is listed to its end the total is unknown: no percent, no ETA.
func (t *Transfer) migration() {
	c := t.Counters
	if t.Type != tasks.TypeMigrate || c == nil {
		return
	}
	done, listed := DecidedObjects(c), c["listed"]
	secs := t.UpdatedAt.Sub(t.StartedAt).Seconds()
	if run := done - DecidedObjects(t.ResumedCounters); secs > 0 && run > 0 && !t.StartedAt.IsZero() {
		t.ObjectsRate = float64(run) / secs
	}
	if c["listing_done"] != 1 || listed == 0 || t.State.Terminal() {
		return
	}
	left := max(listed-done, 0)
	t.Percent = min(100*float64(done)/float64(listed), 100)
	if t.ObjectsRate > 0 {
		t.ETASeconds = float64(left) / t.ObjectsRate
	}
}

// NewTransfer derives a Transfer from p. `ferry status --json` prints it too,
// so the CLI and the API show one object.
func NewTransfer(p tasks.Progress) Transfer {
	t := Transfer{Progress: p}
	switch {
	case p.State == tasks.StateCompleted:
		t.Percent = 100
	case p.BytesTotal > 0:
		t.Percent = 100 * float64(p.BytesDone) / float64(p.BytesTotal)
	case p.PartsTotal > 0:
		t.Percent = 100 * float64(p.PartsDone) / float64(p.PartsTotal)
	}
	t.Percent = min(max(t.Percent, 0), 100)
	if !p.State.Terminal() && p.Rate > 0 && p.BytesTotal > p.BytesDone {
		t.ETASeconds = float64(p.BytesTotal-p.BytesDone) / p.Rate
	}
	t.migration()
	return t
}

// transferList is the body of GET /api/transfers.
type transferList struct {
	Transfers []Transfer `json:"transfers"`
	ReadOnly  bool       `json:"read_only"`
}

func (s *Server) handleListTransfers(w http.ResponseWriter, r *http.Request) {
	limit := defaultListLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "limit must be a positive integer")
			return
		}
		limit = min(n, maxListLimit)
	}
	ps := s.hub.list(limit)
	out := transferList{Transfers: make([]Transfer, len(ps)), ReadOnly: s.cfg.ReadOnly}
	for i, p := range ps {
		out.Transfers[i] = NewTransfer(p)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetTransfer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p, err := s.client.Progress(r.Context(), id)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		writeError(w, http.StatusNotFound, "no transfer "+strconv.Quote(id))
		return
	case err != nil:
		s.log.Error("dashboard: read progress", zap.String("task_id", id), zap.Error(err))
		writeError(w, http.StatusBadGateway, "reading the transfer from Redis failed")
		return
	}
	writeJSON(w, http.StatusOK, NewTransfer(p))
}

func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if s.cfg.ReadOnly {
		writeError(w, http.StatusForbidden, "the dashboard is read-only")
		return
	}
	err := s.client.Cancel(r.Context(), id)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		writeError(w, http.StatusNotFound, "no task "+strconv.Quote(id))
		return
	case errors.Is(err, tasks.ErrFinished):
		writeError(w, http.StatusConflict, "task "+strconv.Quote(id)+" already finished")
		return
	case err != nil:
		s.log.Error("dashboard: cancel", zap.String("task_id", id), zap.Error(err))
		writeError(w, http.StatusBadGateway, "cancelling the task failed: see the dashboard's log")
		return
	}
	s.log.Info("dashboard: task cancelled", zap.String("task_id", id), zap.String("remote", r.RemoteAddr))
	writeJSON(w, http.StatusAccepted, map[string]any{"task_id": id, "cancelled": true})
}

// handleEvents streams progress updates as Server-Sent Events: one
// "progress" event (a Transfer as JSON) per update, for every transfer or
// only those named by ?task=<id> (repeatable). The stream starts with a
// ": subscribed" comment once updates are flowing.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	s.serveStream(w, r, streamSpec{ids: r.URL.Query()["task"]})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
