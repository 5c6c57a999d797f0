package dashboard

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/ferryhq/ferry/tasks"
)

// The OpenAPI 3.1 document of the versioned API, built from apiRoutes (the
// routes registered on the mux) and, by reflection, from the Go types the
// handlers decode and encode (the tasks package's payloads among them): a
// route or a payload field cannot be served without being documented.

// operationDoc documents one route; the rest comes from the route itself.
type operationDoc struct {
	id, summary string
	params      []paramDoc
	body        reflect.Type // request body schema; nil means none
	responses   []responseDoc
}

type paramDoc struct {
	name, in, desc string
	required       bool
}

type responseDoc struct {
	status int
	desc   string
	schema reflect.Type // nil: apiError for >= 400, none otherwise
	sse    bool         // text/event-stream
}

var (
	idParam        = paramDoc{name: "id", in: "path", desc: "the transfer's task id", required: true}
	lastEventIDDoc = paramDoc{name: "Last-Event-ID", in: "header", desc: "resume after this event id (the updated_at of the last event received, Unix nanoseconds)"}
	lastEventIDQry = paramDoc{name: "last_event_id", in: "query", desc: "Last-Event-ID for clients that cannot set headers"}
	badEventID     = responseDoc{status: 400, desc: "Last-Event-ID is not an event id of this API"}
	shuttingDown   = responseDoc{status: 503, desc: "the server is shutting down; reconnect"}
	errorReplies   = []responseDoc{{status: 401, desc: "no or unknown token"}, {status: 403, desc: "the token's scope does not allow this"}, {status: 429, desc: "the token's rate limit is exhausted; see Retry-After"}}
	unavailable    = responseDoc{status: 503, desc: "Redis did not answer; see Retry-After"}
	transferType   = reflect.TypeFor[apiTransfer]()
	enqueueResult  = []responseDoc{
		{status: 201, desc: "enqueued: the new transfer", schema: transferType},
		{status: 200, desc: "the Idempotency-Key's earlier request already enqueued it: that transfer", schema: transferType},
		{status: 400, desc: "invalid request or payload (field and reason)"},
		{status: 409, desc: "the Idempotency-Key was used for a different request"},
		{status: 413, desc: "the body is larger than 1 MiB"},
		{status: 415, desc: "the body is not application/json"},
		{status: 422, desc: "unknown type"},
		unavailable,
	}
)

var (
	docEnqueue = operationDoc{id: "enqueueTransfer", summary: "Enqueue a transfer",
		params: []paramDoc{{name: "Idempotency-Key", in: "header", desc: "a unique key per transfer (e.g. a UUID): a retry with the same key and body enqueues nothing and answers 200 with the first transfer"}},
		body:   reflect.TypeFor[enqueueRequest](), responses: enqueueResult}
	docList = operationDoc{id: "listTransfers", summary: "List transfers: unfinished first, then the most recently updated",
		params: []paramDoc{
			{name: "state", in: "query", desc: "comma-separated states: " + stateNames()},
			{name: "type", in: "query", desc: "comma-separated types: " + strings.Join(apiTypeNames(), ", ")},
			{name: "queue", in: "query", desc: "only transfers in this asynq queue"},
			{name: "limit", in: "query", desc: "page size, 1 to 1000 (default 100)"},
			{name: "cursor", in: "query", desc: "next_cursor of the previous page"},
		},
		responses: []responseDoc{{status: 200, desc: "a page of transfers", schema: reflect.TypeFor[transferPage]()}, {status: 400, desc: "invalid filter, limit or cursor"}, unavailable}}
	docGet = operationDoc{id: "getTransfer", summary: "Read one transfer", params: []paramDoc{idParam},
		responses: []responseDoc{{status: 200, desc: "the transfer", schema: transferType}, {status: 404, desc: "unknown id"}, unavailable}}
	docCancel = operationDoc{id: "cancelTransfer", summary: "Cancel a transfer (a running one aborts its upload)", params: []paramDoc{idParam},
		responses: []responseDoc{{status: 202, desc: "cancelled (a running transfer stops at once and aborts its multipart upload)", schema: reflect.TypeFor[cancelResult]()}, {status: 404, desc: "unknown id"}, {status: 409, desc: "already finished"}, unavailable}}
	docTransferEvents = operationDoc{id: "streamTransferEvents", summary: "Follow one transfer (Server-Sent Events, ends after it finishes)", params: []paramDoc{idParam, lastEventIDDoc, lastEventIDQry},
		responses: []responseDoc{{status: 200, desc: "progress events: data is a transfer", sse: true}, {status: 204, desc: "finished, and its last state was already received"}, badEventID, {status: 404, desc: "unknown id"}, unavailable}}
	docEvents = operationDoc{id: "streamEvents", summary: "Follow every transfer (Server-Sent Events)", params: []paramDoc{lastEventIDDoc, lastEventIDQry},
		responses: []responseDoc{{status: 200, desc: "progress events: data is a transfer", sse: true}, badEventID, shuttingDown}}
	docOpenAPI = operationDoc{id: "getOpenAPI", summary: "This document",
		responses: []responseDoc{{status: 200, desc: "the OpenAPI 3.1 document", schema: reflect.TypeFor[map[string]any]()}}}
)

// cancelResult is the body of a 202 to a cancel.
type cancelResult struct {
	ID        string `json:"id"`
	Cancelled bool   `json:"cancelled"`
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(s.openapi)
}

// OpenAPI returns the OpenAPI 3.1 document of the versioned API.
func OpenAPI() map[string]any {
	g := &schemaGen{components: map[string]any{}}
	g.components["Error"] = g.schema(reflect.TypeFor[apiError]())
	paths := map[string]any{}
	for _, rt := range apiRoutes {
		p := "/api/v1" + rt.path
		item, _ := paths[p].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[p] = item
		}
		item[strings.ToLower(rt.method)] = g.operation(rt)
	}
	// The payloads: one schema per type, and the enqueue body is one of
	// them, chosen by its type (a payload alone is ambiguous: copy and move
	// have the same fields).
	var variants, names []any
	for _, name := range apiTypeNames() {
		t := apiTypes[name]
		names = append(names, name, t.task)
		variants = append(variants, map[string]any{
			"title": name,
			"properties": map[string]any{
				"type":    map[string]any{"enum": []string{name, t.task}},
				"payload": g.schema(t.payload),
			},
		})
	}
	req := g.components["enqueueRequest"].(map[string]any)
	props := req["properties"].(map[string]any)
	props["payload"] = map[string]any{"type": "object", "description": "the payload of the type (the task catalog's JSON); oneOf gives each type's"}
	props["type"] = map[string]any{"type": "string", "enum": names, "description": "the task type: " + strings.Join(apiTypeNames(), ", ") + " (or ferry:upload etc.)"}
	req["required"] = []string{"type", "payload"}
	req["oneOf"] = variants
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "ferry API",
			"version":     "1",
			"description": "Enqueue, follow and cancel ferry transfers from any language. See docs/api.md.",
		},
		"paths": paths,
		"components": map[string]any{
			"schemas": g.components,
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer",
					"description": "a producer token (enqueue, cancel, read), a viewer token (read) or the dashboard's token (everything)"},
			},
		},
		"security": []any{map[string]any{"bearer": []any{}}},
	}
}

func (g *schemaGen) operation(rt apiRoute) map[string]any {
	d := rt.doc
	op := map[string]any{"operationId": d.id, "summary": d.summary,
		"description": "needs a " + rt.scope.String() + " token (or a token of a higher scope)"}
	var params []any
	for _, p := range d.params {
		params = append(params, map[string]any{"name": p.name, "in": p.in, "description": p.desc, "required": p.required, "schema": map[string]any{"type": "string"}})
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	if d.body != nil {
		op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
			"application/json": map[string]any{"schema": g.schema(d.body)}}}
	}
	responses := map[string]any{}
	for _, r := range append(append([]responseDoc{}, d.responses...), errorReplies...) {
		resp := map[string]any{"description": r.desc}
		switch {
		case r.sse:
			resp["content"] = map[string]any{"text/event-stream": map[string]any{"schema": map[string]any{"type": "string"}}}
		case r.schema != nil:
			resp["content"] = map[string]any{"application/json": map[string]any{"schema": g.schema(r.schema)}}
		case r.status >= 400:
			resp["content"] = map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}
		}
		responses[strconv.Itoa(r.status)] = resp
	}
	op["responses"] = responses
	return op
}

// schemaGen derives JSON Schemas from Go types by their json tags; named
// struct types become components.
type schemaGen struct{ components map[string]any }

var timeType = reflect.TypeFor[time.Time]()

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == reflect.TypeFor[tasks.State]():
		var states []string
		for _, s := range allStates {
			states = append(states, string(s))
		}
		return map[string]any{"type": "string", "enum": states}
	case t == reflect.TypeFor[json.RawMessage]():
		return map[string]any{}
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return map[string]any{"type": "string", "contentEncoding": "base64"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		name := t.Name()
		if name == "" {
			return g.structSchema(t)
		}
		if _, ok := g.components[name]; !ok {
			g.components[name] = map[string]any{} // recursion guard
			g.components[name] = g.structSchema(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

func (g *schemaGen) structSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	for name, f := range jsonFields(t) {
		props[name] = g.schema(f.Type)
	}
	return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
}
