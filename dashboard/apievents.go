package dashboard

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/ferryhq/ferry/tasks"
)

// Event streams (Server-Sent Events). Every stream is fed by the hub's one
// subscription. The versioned API's events carry an id, the transfer's
// updated_at in Unix nanoseconds; a client that reconnects with
// Last-Event-ID gets, before the live updates, the latest state of every
// transfer it follows that changed after that id. Progress is a last value,
// so the latest state is what a client missed; an event may come twice
// around the reconnection, never older than one already sent for the same
// transfer.

// streamSpec says what one stream sends.
type streamSpec struct {
	ids      []string         // transfers to follow; nil means all
	replay   []tasks.Progress // sent first, oldest first
	withIDs  bool             // write id: lines (the versioned API)
	untilEnd bool             // end the stream after a terminal event
}

// serveStream writes the stream: the ": subscribed" comment once updates
// flow, spec.replay, then live updates and keep-alive comments.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, spec streamSpec) {
	rc := http.NewResponseController(w)
	select {
	case <-s.hub.ready:
	case <-r.Context().Done():
		return
	case <-time.After(subscribeWait):
		// Redis is down: stream anyway, updates flow once it is back.
	}
	c := s.hub.subscribe(spec.ids)
	if c == nil {
		msg := "the dashboard is shutting down: reconnect"
		if spec.withIDs {
			writeAPIError(w, http.StatusServiceUnavailable, apiError{Code: "unavailable", Message: msg})
		} else {
			writeError(w, http.StatusServiceUnavailable, msg)
		}
		return
	}
	defer s.hub.unsubscribe(c)
	_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives the server's WriteTimeout

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte("retry: 2000\n: subscribed\n\n")); err != nil {
		return
	}
	sent := map[string]time.Time{} // per transfer, the newest update sent
	event := func(data []byte, updated time.Time) []byte {
		var b []byte
		if spec.withIDs && !updated.IsZero() {
			b = append(b, "id: "+strconv.FormatInt(updated.UnixNano(), 10)+"\n"...)
		}
		b = append(b, "event: progress\ndata: "...)
		return append(append(b, data...), '\n', '\n')
	}
	for _, p := range spec.replay {
		data, err := jsonTransfer(p)
		if err != nil {
			continue
		}
		if _, err := w.Write(event(data, p.UpdatedAt)); err != nil {
			return
		}
		sent[p.TaskID] = p.UpdatedAt
		if spec.untilEnd && p.State.Terminal() {
			_ = rc.Flush()
			return
		}
	}
	if err := rc.Flush(); err != nil {
		return
	}
	heartbeat := time.NewTicker(sseHeartbeat)
	defer heartbeat.Stop()
	for {
		var chunk []byte
		end := false
		select {
		case <-r.Context().Done():
			return
		case <-c.gone:
			return
		case <-heartbeat.C:
			chunk = []byte(": keep-alive\n\n")
		case msg := <-c.events:
			if len(sent) > 0 {
				// Skip what the replay already covered.
				if last, ok := sent[msg.taskID]; ok && !msg.updated.After(last) {
					continue
				}
			}
			chunk, end = event(msg.data, msg.updated), spec.untilEnd && msg.terminal
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
		if err := rc.Flush(); err != nil || end {
			return
		}
	}
}

// lastEventID parses Last-Event-ID (or ?last_event_id= for clients that
// cannot set headers): Unix nanoseconds; 0 when absent.
func lastEventID(r *http.Request) (int64, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("last_event_id")
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest("Last-Event-ID", "Last-Event-ID %q is not an event id of this API (a number): reconnect with the id of the last event received", v)
	}
	return n, nil
}

// handleV1TransferEvents streams one transfer: its current state first
// (newer than Last-Event-ID), then its updates, and ends after it finishes.
// A finished transfer whose last state the client has seen gets 204, which
// tells an EventSource to stop reconnecting.
func (s *Server) handleV1TransferEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	since, err := lastEventID(r)
	if err != nil {
		s.writeAPIErr(w, err)
		return
	}
	p, err := s.transferProgress(r.Context(), id)
	if err != nil {
		s.writeAPIErr(w, err)
		return
	}
	newer := since == 0 || p.UpdatedAt.UnixNano() > since
	if p.State.Terminal() && !newer {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	spec := streamSpec{ids: []string{id}, withIDs: true, untilEnd: true}
	if newer {
		spec.replay = []tasks.Progress{p}
	}
	s.serveStream(w, r, spec)
}

// handleV1Events streams every transfer's updates; with Last-Event-ID it
// first replays the latest state of each transfer updated since.
func (s *Server) handleV1Events(w http.ResponseWriter, r *http.Request) {
	since, err := lastEventID(r)
	if err != nil {
		s.writeAPIErr(w, err)
		return
	}
	spec := streamSpec{withIDs: true}
	if since > 0 {
		for _, p := range s.hub.list(0) {
			if p.UpdatedAt.UnixNano() > since {
				spec.replay = append(spec.replay, p)
			}
		}
		slices.SortFunc(spec.replay, func(a, b tasks.Progress) int { return a.UpdatedAt.Compare(b.UpdatedAt) })
	}
	s.serveStream(w, r, spec)
}

func jsonTransfer(p tasks.Progress) ([]byte, error) { return json.Marshal(NewTransfer(p)) }
