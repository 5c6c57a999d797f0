package dashboard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/webhook"
)

// The versioned HTTP API, for producers in any language: enqueue, read,
// list, cancel and follow transfers. docs/api.md is its guide and
// GET /api/v1/openapi.json its reference, generated from apiRoutes and
// the payload types, so the document cannot drift from the code.

// Limits of the versioned API.
const (
	// maxRequestBody bounds a request body: inline put data (256 KiB) as
	// base64 plus the rest fits with room to spare.
	maxRequestBody = 1 << 20
	// defaultPageSize and maxPageSize bound GET /api/v1/transfers?limit=.
	defaultPageSize = 100
	maxPageSize     = 1000
	// maxIdempotencyKey is the longest Idempotency-Key accepted.
	maxIdempotencyKey = 255
	// retryAfterSeconds is Retry-After on a 503 when Redis is unreachable.
	retryAfterSeconds = 5
	// enqueueTimeout bounds the Redis work of one enqueue.
	enqueueTimeout = 10 * time.Second
)

// apiRoute is one route of the versioned API. apiRoutes registers them and
// the OpenAPI document describes them: one list for both.
type apiRoute struct {
	method, path string // path without the /api/v1 prefix, ServeMux syntax
	scope        Scope
	handler      func(*Server) http.HandlerFunc
	doc          operationDoc
}

var apiRoutes = []apiRoute{
	{http.MethodPost, "/transfers", ScopeProducer, func(s *Server) http.HandlerFunc { return s.handleV1Enqueue }, docEnqueue},
	{http.MethodGet, "/transfers", ScopeViewer, func(s *Server) http.HandlerFunc { return s.handleV1List }, docList},
	{http.MethodGet, "/transfers/{id}", ScopeViewer, func(s *Server) http.HandlerFunc { return s.handleV1Get }, docGet},
	{http.MethodGet, "/transfers/{id}/report", ScopeViewer, func(s *Server) http.HandlerFunc { return s.handleV1Report }, docReport},
	{http.MethodGet, "/transfers/{id}/parts", ScopeViewer, func(s *Server) http.HandlerFunc { return s.handleV1Parts }, docParts},
	{http.MethodPost, "/transfers/{id}/cancel", ScopeProducer, func(s *Server) http.HandlerFunc { return s.handleV1Cancel }, docCancel},
	{http.MethodGet, "/transfers/{id}/events", ScopeViewer, func(s *Server) http.HandlerFunc { return s.handleV1TransferEvents }, docTransferEvents},
	{http.MethodGet, "/events", ScopeViewer, func(s *Server) http.HandlerFunc { return s.handleV1Events }, docEvents},
	{http.MethodGet, "/throughput", ScopeViewer, func(s *Server) http.HandlerFunc { return s.handleV1Throughput }, docThroughput},
	{http.MethodGet, "/workers", ScopeViewer, func(s *Server) http.HandlerFunc { return s.handleV1Workers }, docWorkers},
	{http.MethodGet, "/openapi.json", ScopeViewer, func(s *Server) http.HandlerFunc { return s.handleOpenAPI }, docOpenAPI},
}

// registerAPI adds apiRoutes to mux and records their patterns.
func (s *Server) registerAPI(mux *http.ServeMux) {
	for _, rt := range apiRoutes {
		pattern := rt.method + " /api/v1" + rt.path
		mux.HandleFunc(pattern, s.requireScope(rt.scope, rt.handler(s)))
		s.apiPatterns = append(s.apiPatterns, pattern)
	}
	// Maps of plain values always encode.
	s.openapi, _ = json.MarshalIndent(OpenAPI(), "", "  ")
	// Anything else under /api/v1/ is a JSON 404, not the HTML one.
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, http.StatusNotFound, apiError{Code: "not_found",
			Message: fmt.Sprintf("no route %s %s: see GET /api/v1/openapi.json", r.Method, r.URL.Path)})
	})
}

// apiTransfer is a transfer as the versioned API returns it.
type apiTransfer struct {
	Transfer
	// Queue is the asynq queue of the task; returned by enqueue.
	Queue string `json:"queue,omitempty"`
}

// enqueueRequest is the body of POST /api/v1/transfers.
type enqueueRequest struct {
	// Type is put, upload, copy, move, delete or migrate ("ferry:upload" works too).
	Type string `json:"type"`
	// Payload is the task catalog's payload of that type.
	Payload json.RawMessage `json:"payload"`
	// Queue is the asynq queue; empty means "default".
	Queue string `json:"queue,omitempty"`
	// Timeout of one run, a Go duration ("90s", "2h"); empty means sized
	// from the object (tasks.TimeoutFor).
	Timeout string `json:"timeout,omitempty"`
	// MaxRetry is the retries before the task fails for good; absent means
	// the type's default (25 for transfers, 10 for put and delete).
	MaxRetry *int `json:"max_retry,omitempty"`
	// ProcessAt schedules the task for a time (RFC 3339).
	ProcessAt *time.Time `json:"process_at,omitempty"`
	// ProcessIn schedules the task after a delay, a Go duration.
	ProcessIn string `json:"process_in,omitempty"`
	// Notify asks for a signed webhook when the transfer ends; the same as
	// the payload's notify (give one of them). See docs/api.md "Webhooks".
	Notify *tasks.Notify `json:"notify,omitempty"`
}

// options turns the request's options into asynq options.
func (req *enqueueRequest) options() ([]asynq.Option, string, error) {
	queue := nonEmpty(req.Queue, "default")
	if len(queue) > 100 || strings.ContainsFunc(queue, func(r rune) bool { return r <= ' ' || r == 0x7f || r > 0x7e }) {
		return nil, "", badRequest("queue", "queue %q: use up to 100 printable ASCII characters without spaces", queue)
	}
	opts := []asynq.Option{asynq.Queue(queue)}
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil || d <= 0 {
			return nil, "", badRequest("timeout", "timeout %q: give a positive duration such as \"90s\" or \"2h\"", req.Timeout)
		}
		opts = append(opts, asynq.Timeout(d))
	}
	if req.MaxRetry != nil {
		if *req.MaxRetry < 0 || *req.MaxRetry > 1000 {
			return nil, "", badRequest("max_retry", "max_retry %d is out of range: use 0 to 1000", *req.MaxRetry)
		}
		opts = append(opts, asynq.MaxRetry(*req.MaxRetry))
	}
	switch {
	case req.ProcessAt != nil && req.ProcessIn != "":
		return nil, "", badRequest("process_in", "process_at and process_in both schedule the task: give one")
	case req.ProcessAt != nil:
		opts = append(opts, asynq.ProcessAt(*req.ProcessAt))
	case req.ProcessIn != "":
		d, err := time.ParseDuration(req.ProcessIn)
		if err != nil || d < 0 {
			return nil, "", badRequest("process_in", "process_in %q: give a duration such as \"10m\"", req.ProcessIn)
		}
		opts = append(opts, asynq.ProcessIn(d))
	}
	return opts, queue, nil
}

// idempotentTaskID is the task id of an Idempotency-Key: the same key gives
// the same id, so asynq refuses a second task while the first one's record
// exists (tasks.DefaultRetention after it ends).
func idempotentTaskID(key string) string {
	h := sha256.Sum256([]byte("ferry-api-idempotency|" + key))
	return "api-" + hex.EncodeToString(h[:16])
}

func checkIdempotencyKey(key string) error {
	if len(key) > maxIdempotencyKey || strings.ContainsFunc(key, func(r rune) bool { return r < ' ' || r > 0x7e }) {
		return &apiError{status: 400, Code: "invalid_request", Field: "Idempotency-Key",
			Message: fmt.Sprintf("Idempotency-Key: use 1 to %d printable ASCII characters, e.g. a UUID", maxIdempotencyKey)}
	}
	return nil
}

// readJSONBody checks the content type and reads at most maxRequestBody.
func readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: fmt.Sprintf("Content-Type %q: send the body as JSON with Content-Type: application/json", ct)}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, Code: "body_too_large",
			Message: fmt.Sprintf("the body is larger than %d bytes: inline data is for small puts (%d bytes); upload larger content from a path, URL or S3 object", maxRequestBody, tasks.MaxInlineSize)}
	case err != nil:
		return nil, badRequest("", "reading the body failed: %v", err)
	}
	if !utf8.Valid(body) {
		return nil, badRequest("", "the body is not valid UTF-8: JSON decoding would replace the invalid bytes and change keys or paths")
	}
	return body, nil
}

func (s *Server) handleV1Enqueue(w http.ResponseWriter, r *http.Request) {
	tr, code, err := s.enqueue(w, r)
	if err != nil {
		s.writeAPIErr(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/transfers/"+tr.TaskID)
	writeJSON(w, code, tr)
}

// enqueue does POST /api/v1/transfers: 201 and the new transfer, or 200 and
// the transfer an earlier request with the same Idempotency-Key made.
func (s *Server) enqueue(w http.ResponseWriter, r *http.Request) (apiTransfer, int, error) {
	key, hasKey := r.Header.Get("Idempotency-Key"), r.Header.Get("Idempotency-Key") != ""
	if hasKey {
		if err := checkIdempotencyKey(key); err != nil {
			return apiTransfer{}, 0, err
		}
	}
	if s.cfg.ReadOnly {
		return apiTransfer{}, 0, &apiError{status: http.StatusForbidden, Code: "read_only", Message: "the dashboard is read-only: it enqueues nothing"}
	}
	body, err := readJSONBody(w, r)
	if err != nil {
		return apiTransfer{}, 0, err
	}
	var req enqueueRequest
	if err := decodeStrict(body, &req, ""); err != nil {
		return apiTransfer{}, 0, err
	}
	if req.Type == "" {
		return apiTransfer{}, 0, badRequest("type", "type is missing: give one of %s", strings.Join(apiTypeNames(), ", "))
	}
	typ, ok := lookupAPIType(req.Type)
	if !ok {
		return apiTransfer{}, 0, &apiError{status: http.StatusUnprocessableEntity, Code: "unknown_type", Field: "type",
			Message: fmt.Sprintf("unknown type %q: give one of %s", req.Type, strings.Join(apiTypeNames(), ", "))}
	}
	if len(req.Payload) == 0 || string(req.Payload) == "null" {
		return apiTransfer{}, 0, badRequest("payload", "payload is missing: give the %s payload (see GET /api/v1/openapi.json)", typ.name)
	}
	opts, queue, err := req.options()
	if err != nil {
		return apiTransfer{}, 0, err
	}
	id := ""
	if hasKey {
		id = idempotentTaskID(key)
		opts = append(opts, asynq.TaskID(id))
	}
	task, src, dst, size, err := typ.build(req.Payload, req.Notify, opts)
	if err != nil {
		return apiTransfer{}, 0, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), enqueueTimeout)
	defer cancel()
	if hasKey {
		// A retried request finds its task and enqueues nothing.
		if tr, code, err := s.existing(ctx, id, task, queue); !errors.Is(err, tasks.ErrNotFound) {
			return tr, code, err
		}
	}
	info, err := s.client.Enqueue(ctx, task)
	switch {
	case errors.Is(err, webhook.ErrRefused):
		return apiTransfer{}, 0, &apiError{status: http.StatusBadRequest, Code: "invalid_payload", Field: notifyField(req.Notify), Message: err.Error()}
	case hasKey && errors.Is(err, asynq.ErrTaskIDConflict):
		// Another request with the same key won the race.
		return s.existing(ctx, id, task, queue)
	case err != nil:
		return apiTransfer{}, 0, s.redisDown("enqueue", err)
	}
	p := tasks.Progress{TaskID: info.ID, Type: info.Type, State: tasks.StatePending, BytesTotal: size, Source: src, Dest: dst, UpdatedAt: time.Now()}
	// Announce it (state pending) so lists and event streams show it before
	// a worker takes it; a worker's own progress is never overwritten.
	if _, err := tasks.PublishProgressIfAbsent(ctx, s.cfg.Redis, p); err != nil {
		s.log.Warn("api: announcing an enqueued task failed", zap.String("task_id", info.ID), zap.Error(err))
	}
	c, _ := callerFrom(r.Context())
	s.log.Info("api: task enqueued", zap.String("task_id", info.ID), zap.String("type", info.Type), zap.String("queue", info.Queue), zap.String("token", c.id))
	return apiTransfer{Transfer: NewTransfer(p), Queue: info.Queue}, http.StatusCreated, nil
}

// notifyField is the request field that carried the notify URL.
func notifyField(option *tasks.Notify) string {
	if option != nil {
		return "notify"
	}
	return "payload.notify"
}

// existing answers a request whose Idempotency-Key already made task id:
// 200 with it when the request is the same (type, payload, queue), else 409.
// It returns tasks.ErrNotFound when there is no such task.
func (s *Server) existing(ctx context.Context, id string, task *asynq.Task, queue string) (apiTransfer, int, error) {
	info, err := s.client.Lookup(ctx, id)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		return apiTransfer{}, 0, err
	case err != nil:
		return apiTransfer{}, 0, s.redisDown("look up the Idempotency-Key's task", err)
	}
	if info.Type != task.Type() || info.Queue != queue || !bytes.Equal(info.Payload, task.Payload()) {
		return apiTransfer{}, 0, &apiError{status: http.StatusConflict, Code: "idempotency_key_reused", Field: "Idempotency-Key",
			Message: fmt.Sprintf("this Idempotency-Key was used for a different request (task %s: type %s in queue %q): use a new key for a new transfer", id, info.Type, info.Queue)}
	}
	p, err := s.client.Progress(ctx, id)
	if err != nil {
		return apiTransfer{}, 0, s.redisDown("read the transfer", err)
	}
	return apiTransfer{Transfer: NewTransfer(p), Queue: info.Queue}, http.StatusOK, nil
}

// redisDown logs err and returns a 503 that says to retry.
func (s *Server) redisDown(what string, err error) error {
	s.log.Error("api: "+what+" failed", zap.Error(err))
	return &apiError{status: http.StatusServiceUnavailable, Code: "unavailable",
		Message: fmt.Sprintf("could not %s: the queue's Redis did not answer; retry after %d s (details in the server's log)", what, retryAfterSeconds)}
}

func (s *Server) handleV1Get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p, err := s.transferProgress(r.Context(), id)
	if err != nil {
		s.writeAPIErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiTransfer{Transfer: NewTransfer(p)})
}

// transferProgress reads transfer id's progress. Its error is the API's
// answer: 404 for an id with no progress, 503 when Redis did not answer.
func (s *Server) transferProgress(ctx context.Context, id string) (tasks.Progress, error) {
	p, err := s.client.Progress(ctx, id)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		return p, noTransfer(id)
	case err != nil:
		return p, s.redisDown("read the transfer", err)
	}
	return p, nil
}

// noTransfer is the API's 404 for an unknown transfer id.
func noTransfer(id string) *apiError {
	return &apiError{status: http.StatusNotFound, Code: "not_found", Message: "no transfer " + strconv.Quote(id)}
}

func (s *Server) handleV1Cancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if s.cfg.ReadOnly {
		s.writeAPIErr(w, &apiError{status: http.StatusForbidden, Code: "read_only", Message: "the dashboard is read-only: it cancels nothing"})
		return
	}
	err := s.client.Cancel(r.Context(), id)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		s.writeAPIErr(w, noTransfer(id))
		return
	case errors.Is(err, tasks.ErrFinished):
		s.writeAPIErr(w, &apiError{status: http.StatusConflict, Code: "finished", Message: "transfer " + strconv.Quote(id) + " already finished: there is nothing to cancel"})
		return
	case err != nil:
		s.writeAPIErr(w, s.redisDown("cancel the transfer", err))
		return
	}
	c, _ := callerFrom(r.Context())
	s.log.Info("api: task cancelled", zap.String("task_id", id), zap.String("token", c.id))
	writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "cancelled": true})
}

// transferPage is the body of GET /api/v1/transfers.
type transferPage struct {
	Transfers []apiTransfer `json:"transfers"`
	// NextCursor fetches the next page (?cursor=); empty on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// listCursor is the position after the last transfer of a page, in the
// list's order (unfinished first, then newest update, then id).
type listCursor struct {
	Terminal bool      `json:"t"`
	Updated  time.Time `json:"u"`
	ID       string    `json:"i"`
}

func (c listCursor) encode() string {
	b, _ := json.Marshal(c) // a listCursor always encodes
	return base64.RawURLEncoding.EncodeToString(b)
}

// after reports whether p comes after the cursor in the list's order.
func (c listCursor) after(p tasks.Progress) bool {
	if t := p.State.Terminal(); t != c.Terminal {
		return t
	}
	if !p.UpdatedAt.Equal(c.Updated) {
		return p.UpdatedAt.Before(c.Updated)
	}
	return p.TaskID > c.ID
}

var allStates = []tasks.State{tasks.StatePending, tasks.StateActive, tasks.StateRetrying, tasks.StateCompleted, tasks.StateFailed, tasks.StateCancelled}

// stateNames are allStates for messages and docs: "pending, active, ...".
func stateNames() string {
	names := make([]string, len(allStates))
	for i, st := range allStates {
		names[i] = string(st)
	}
	return strings.Join(names, ", ")
}

func (s *Server) handleV1List(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultPageSize
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			s.writeAPIErr(w, badRequest("limit", "limit %q: give 1 to %d", v, maxPageSize))
			return
		}
		limit = n
	}
	var cur *listCursor
	if v := q.Get("cursor"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		var c listCursor
		if err != nil || json.Unmarshal(b, &c) != nil || c.ID == "" {
			s.writeAPIErr(w, badRequest("cursor", "cursor is not one this API returned: pass next_cursor unchanged"))
			return
		}
		cur = &c
	}
	states := map[tasks.State]bool{}
	for _, v := range splitList(q["state"]) {
		if !slices.Contains(allStates, tasks.State(v)) {
			s.writeAPIErr(w, badRequest("state", "state %q: give one or more (comma-separated) of %s", v, stateNames()))
			return
		}
		states[tasks.State(v)] = true
	}
	types := map[string]bool{}
	for _, v := range splitList(q["type"]) {
		t, ok := lookupAPIType(v)
		if !ok {
			s.writeAPIErr(w, badRequest("type", "type %q: give one or more (comma-separated) of %s", v, strings.Join(apiTypeNames(), ", ")))
			return
		}
		types[t.task] = true
	}
	var inQueue map[string]bool
	if queue := q.Get("queue"); queue != "" {
		m, err := s.queueMembers(queue)
		if err != nil {
			s.writeAPIErr(w, s.redisDown("list the queue", err))
			return
		}
		inQueue = m
	}
	page := transferPage{Transfers: []apiTransfer{}}
	var last tasks.Progress
	for _, p := range s.hub.list(0) {
		switch {
		case cur != nil && !cur.after(p),
			len(states) > 0 && !states[p.State],
			len(types) > 0 && !types[p.Type],
			inQueue != nil && !inQueue[p.TaskID]:
			continue
		}
		if len(page.Transfers) == limit {
			page.NextCursor = listCursor{Terminal: last.State.Terminal(), Updated: last.UpdatedAt, ID: last.TaskID}.encode()
			break
		}
		page.Transfers = append(page.Transfers, apiTransfer{Transfer: NewTransfer(p)})
		last = p
	}
	writeJSON(w, http.StatusOK, page)
}

// splitList splits repeated and comma-separated query values.
func splitList(vs []string) []string {
	var out []string
	for _, v := range vs {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// queueMembers returns the ids of the tasks asynq holds in queue, in every
// state, up to MaxIndexed per state.
func (s *Server) queueMembers(queue string) (map[string]bool, error) {
	in := s.client.Inspector()
	out := map[string]bool{}
	size := asynq.PageSize(s.cfg.MaxIndexed)
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		in.ListPendingTasks, in.ListActiveTasks, in.ListScheduledTasks, in.ListRetryTasks, in.ListArchivedTasks, in.ListCompletedTasks,
	} {
		infos, err := list(queue, size)
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		for _, i := range infos {
			out[i.ID] = true
		}
	}
	return out, nil
}

// writeAPIErr writes err: an *apiError as itself, anything else as a 500.
func (s *Server) writeAPIErr(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		s.log.Error("api: unexpected error", zap.Error(err))
		ae = &apiError{status: http.StatusInternalServerError, Code: "internal", Message: "internal error: see the server's log"}
	}
	if ae.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	writeAPIError(w, ae.status, *ae)
}

func writeAPIError(w http.ResponseWriter, code int, e apiError) {
	writeJSON(w, code, e)
}
