package dashboard_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// The OpenAPI document is proven three ways, with pb33f's libopenapi and
// libopenapi-validator (docs/api.md says why these):
//   - TestOpenAPIDocument: it is a valid OpenAPI 3.1 document, it documents
//     exactly the routes the server registers, every documented operation
//     reaches a handler, and the schemas have every field of the Go types
//     the handlers decode and encode (and no field those types lack);
//   - specCheck, wrapped around the server of every API test (apiSetup):
//     each request the server accepted and each answer it gave, errors
//     and Server-Sent Events included, is validated against the document;
//   - TestOpenAPIExchanges: one session that calls every route, so the
//     check above has covered each of them at least once.

// openAPIDoc is the served document, parsed.
func openAPIDoc(t *testing.T, raw []byte) (libopenapi.Document, *v3.Document) {
	t.Helper()
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatalf("libopenapi: %v", err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("libopenapi: building the model: %v", err)
	}
	return doc, &m.Model
}

func servedOpenAPI(t *testing.T, b *bundle) []byte {
	t.Helper()
	resp, out := b.call(t, "GET", "/api/v1/openapi.json", viewerToken, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return []byte(out)
}

func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	b := apiSetup(t)
	raw := servedOpenAPI(t, b)
	doc, model := openAPIDoc(t, raw)
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Errorf("openapi version %q; want 3.1.0", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("the document is not valid OpenAPI 3.1:\n%s", describe(verrs))
	}
	for _, p := range documentGaps(model, b.srv.APIPatterns()) {
		t.Error(p)
	}
	// Every documented operation reaches a handler of its own, and no
	// other method on a documented path does (those reach the JSON 404).
	for path, item := range model.Paths.PathItems.FromOldest() {
		ops := item.GetOperations()
		concrete := strings.ReplaceAll(path, "{id}", "no-such-transfer")
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			_, documented := ops.Get(strings.ToLower(m))
			// The bad Last-Event-ID ends an event stream at once.
			resp, out := b.call(t, m, concrete, producerToken, nil, "Last-Event-ID", "x")
			if routed := !strings.Contains(out, `"no route `); routed != documented {
				t.Errorf("%s %s: documented %v, but the server answered %d %s", m, path, documented, resp.StatusCode, out)
			}
		}
	}
}

// TestOpenAPIGapsDetected: the document check finds a route, a field and
// a payload type the document lacks, and a field it has too many.
func TestOpenAPIGapsDetected(t *testing.T) {
	t.Parallel()
	var doc map[string]any
	raw, _ := json.Marshal(dashboard.OpenAPI())
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	transfer := schemas["apiTransfer"].(map[string]any)["properties"].(map[string]any)
	delete(transfer, "bytes_done")
	location := schemas["Location"].(map[string]any)["properties"].(map[string]any)
	location["region"] = map[string]any{"type": "string"}
	delete(doc["paths"].(map[string]any)["/api/v1/transfers/{id}"].(map[string]any), "get")
	// Drop the delete payload from the enqueue body's oneOf.
	req := schemas["enqueueRequest"].(map[string]any)
	req["oneOf"] = slices.DeleteFunc(req["oneOf"].([]any), func(s any) bool {
		return s.(map[string]any)["title"] == "delete"
	})
	raw, _ = json.Marshal(doc)
	_, model := openAPIDoc(t, raw)
	b := setup(t)
	gaps := strings.Join(documentGaps(model, b.srv.APIPatterns()), "\n")
	for _, want := range []string{
		"GET /api/v1/transfers/{id} is served but not documented",
		"POST /api/v1/transfers 201: bytes_done is missing",
		"GET /api/v1/transfers 200: transfers[].bytes_done is missing",
		"source.region is documented but",
		"payload delete (tasks.DeletePayload) is not documented",
		"payload(upload).source.region is documented but tasks.Location has no such field",
	} {
		if !strings.Contains(gaps, want) {
			t.Errorf("the check missed %q; it found:\n%s", want, gaps)
		}
	}
}

// TestSpecCheckCatchesDrift: the exchange check, given a document that
// lacks a field the server sends and one that lacks a query parameter the
// server accepted, reports both.
func TestSpecCheckCatchesDrift(t *testing.T) {
	t.Parallel()
	var doc map[string]any
	raw, _ := json.Marshal(dashboard.OpenAPI())
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	transfer := doc["components"].(map[string]any)["schemas"].(map[string]any)["apiTransfer"].(map[string]any)["properties"].(map[string]any)
	delete(transfer, "bytes_done")
	raw, _ = json.Marshal(doc)
	check := newSpecCheckFrom(t, raw)
	b := setupWrapped(t, check.wrap, apiTokens)
	id := testenv.UniqueName("drift")
	publish(t, b.rdb, tasks.Progress{TaskID: id, State: tasks.StateActive, BytesDone: 1, BytesTotal: 4, UpdatedAt: time.Now()})
	if resp, out := b.call(t, "GET", "/api/v1/transfers/"+id, viewerToken, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("get: %d %s", resp.StatusCode, out)
	}
	check.mu.Lock()
	defer check.mu.Unlock()
	if errs := strings.Join(check.errs, "\n"); !strings.Contains(errs, "the answer is not as documented") || !strings.Contains(errs, "bytes_done") {
		t.Errorf("the check did not report the undocumented bytes_done: %q", errs)
	}
}

// documentGaps compares the document with the routes the server registers
// and with the Go body types, and describes each difference.
func documentGaps(model *v3.Document, patterns []string) []string {
	var gaps []string
	documented := map[string]*v3.Operation{}
	for path, item := range model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			documented[strings.ToUpper(method)+" "+path] = op
		}
	}
	for _, p := range patterns {
		if documented[p] == nil {
			gaps = append(gaps, p+" is served but not documented")
		}
	}
	for p := range documented {
		if !slices.Contains(patterns, p) {
			gaps = append(gaps, p+" is documented but not served")
		}
	}
	for _, bt := range dashboard.APIBodyTypes() {
		op := documented[bt.Method+" "+bt.Path]
		if op == nil {
			gaps = append(gaps, fmt.Sprintf("body type of %s %s has no documented operation", bt.Method, bt.Path))
			continue
		}
		where := bt.Method + " " + bt.Path + " " + nonEmptyStr(bt.Status, "request")
		var schema *base.SchemaProxy
		if bt.Status == "" {
			if op.RequestBody != nil {
				schema = jsonSchemaOf(op.RequestBody.Content)
			}
		} else if r, ok := op.Responses.Codes.Get(bt.Status); ok {
			schema = jsonSchemaOf(r.Content)
		}
		if schema == nil {
			gaps = append(gaps, where+": no application/json schema")
			continue
		}
		gaps = append(gaps, schemaGaps(where, "", schema, bt.Type)...)
		if bt.Status == "" {
			gaps = append(gaps, payloadGaps(where, schema)...)
		}
	}
	// Every error answer is an Error.
	for key, op := range documented {
		for code, r := range op.Responses.Codes.FromOldest() {
			if code >= "400" {
				if s := jsonSchemaOf(r.Content); s == nil {
					gaps = append(gaps, fmt.Sprintf("%s %s: no application/json error schema", key, code))
				} else {
					gaps = append(gaps, schemaGaps(key+" "+code, "", s, dashboard.ErrorType)...)
				}
			}
		}
	}
	sort.Strings(gaps)
	return gaps
}

// payloadGaps checks the enqueue body's oneOf: for each payload type, a
// member whose type enum names it and whose payload has its fields.
func payloadGaps(where string, body *base.SchemaProxy) []string {
	var gaps []string
	byType := map[string]*base.SchemaProxy{}
	for _, m := range body.Schema().OneOf {
		s := m.Schema()
		if s == nil || s.Properties == nil {
			continue
		}
		typ, _ := s.Properties.Get("type")
		payload, _ := s.Properties.Get("payload")
		if typ == nil || payload == nil || typ.Schema() == nil {
			continue
		}
		for _, n := range typ.Schema().Enum {
			byType[n.Value] = payload
		}
	}
	for name, typ := range dashboard.PayloadTypes() {
		payload := byType[name]
		if payload == nil {
			gaps = append(gaps, fmt.Sprintf("%s: payload %s (%s) is not documented: no oneOf member has type %q", where, name, typ, name))
			continue
		}
		gaps = append(gaps, schemaGaps(where, "payload("+name+")", payload, typ)...)
	}
	return gaps
}

func jsonSchemaOf(content interface {
	Get(string) (*v3.MediaType, bool)
}) *base.SchemaProxy {
	if mt, ok := content.Get("application/json"); ok && mt != nil {
		return mt.Schema
	}
	return nil
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

// schemaGaps compares the schema at path with the Go type t: every JSON
// field of a struct must be a property (and every property a field), with
// the type's kind, recursively.
func schemaGaps(where, path string, sp *base.SchemaProxy, t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	s := sp.Schema()
	if s == nil {
		return []string{fmt.Sprintf("%s: %s has no schema: %v", where, nonEmptyStr(path, "body"), sp.GetBuildError())}
	}
	kind := func(want string) []string {
		if !slices.Contains(s.Type, want) {
			return []string{fmt.Sprintf("%s: %s is %v in the document; the Go type %s wants %s", where, nonEmptyStr(path, "body"), s.Type, t, want)}
		}
		return nil
	}
	switch {
	case t == rawType:
		return nil // the payload: payloadGaps checks it
	case t == timeType:
		return kind("string")
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return kind("string")
	}
	switch t.Kind() {
	case reflect.String:
		return kind("string")
	case reflect.Bool:
		return kind("boolean")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return kind("integer")
	case reflect.Float32, reflect.Float64:
		return kind("number")
	case reflect.Slice, reflect.Array:
		if gaps := kind("array"); gaps != nil || s.Items == nil || !s.Items.IsA() {
			return append(gaps, fmt.Sprintf("%s: %s has no items schema", where, path))
		}
		return schemaGaps(where, path+"[]", s.Items.A, t.Elem())
	case reflect.Map:
		if gaps := kind("object"); gaps != nil || s.AdditionalProperties == nil || !s.AdditionalProperties.IsA() {
			return append(gaps, fmt.Sprintf("%s: %s has no additionalProperties schema", where, path))
		}
		return schemaGaps(where, path+"{}", s.AdditionalProperties.A, t.Elem())
	case reflect.Struct:
		var gaps []string
		fields := dashboard.JSONFields(t)
		join := func(name string) string {
			if path == "" {
				return name
			}
			return path + "." + name
		}
		for name, f := range fields {
			var p *base.SchemaProxy
			if s.Properties != nil {
				p, _ = s.Properties.Get(name)
			}
			if p == nil {
				gaps = append(gaps, fmt.Sprintf("%s: %s is missing from the document (Go field %s.%s)", where, join(name), t, f.Name))
				continue
			}
			gaps = append(gaps, schemaGaps(where, join(name), p, f.Type)...)
		}
		if s.Properties != nil {
			for name := range s.Properties.KeysFromOldest() {
				if _, ok := fields[name]; !ok {
					gaps = append(gaps, fmt.Sprintf("%s: %s is documented but %s has no such field", where, join(name), t))
				}
			}
		}
		return gaps
	}
	return nil
}

func nonEmptyStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func describe(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "%s: %s", e.Message, e.Reason)
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, " [%s: %s]", f.FieldPath, f.Reason)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// specCheck validates the exchanges of the versioned API against the
// document, and counts the validated exchanges of each operation.
type specCheck struct {
	v      validator.Validator
	routes *http.ServeMux // the documented paths, to name a request's operation

	mu      sync.Mutex
	errs    []string
	covered map[string]int
}

// newSpecCheck builds the check from the document the server serves
// (dashboard.OpenAPI, which handleOpenAPI writes as is).
func newSpecCheck(t *testing.T) *specCheck {
	t.Helper()
	raw, err := json.Marshal(dashboard.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	return newSpecCheckFrom(t, raw)
}

func newSpecCheckFrom(t *testing.T, raw []byte) *specCheck {
	t.Helper()
	doc, model := openAPIDoc(t, raw)
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	c := &specCheck{v: v, routes: http.NewServeMux(), covered: map[string]int{}}
	for path, item := range model.Paths.PathItems.FromOldest() {
		for method := range item.GetOperations().KeysFromOldest() {
			c.routes.Handle(strings.ToUpper(method)+" "+path, http.NotFoundHandler())
		}
	}
	return c
}

func (c *specCheck) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

// wrap validates every exchange under /api/v1/ that reached a handler of
// the API: the request when the server accepted it (a 2xx: what the
// server takes must be what the document allows), the answer always.
func (c *specCheck) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := &teeWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		c.check(r, body, rec)
	})
}

func (c *specCheck) check(r *http.Request, body []byte, rec *teeWriter) {
	out := rec.buf.Bytes()
	if rec.status == http.StatusNotFound && bytes.Contains(out, []byte(`"no route `)) {
		return // the catch-all: TestOpenAPIDocument checks what reaches it
	}
	what := fmt.Sprintf("%s %s → %d", r.Method, r.URL.RequestURI(), rec.status)
	req := func(b []byte) *http.Request {
		q := r.Clone(r.Context())
		q.Body = io.NopCloser(bytes.NewReader(b))
		q.ContentLength = int64(len(b))
		return q
	}
	if rec.status < 300 {
		if ok, errs := c.v.ValidateHttpRequestSync(req(body)); !ok {
			c.fail("%s: the server accepted a request the document does not allow:\n%s", what, describe(errs))
			return
		}
	}
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
		// Each event's data is a transfer, as GET /api/v1/transfers/{id}
		// answers it.
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			get, _ := http.NewRequest("GET", "/api/v1/transfers/x", nil)
			get.Header.Set("Authorization", "Bearer x")
			resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(data)), Request: get}
			if ok, errs := c.v.ValidateHttpResponse(get, resp); !ok {
				c.fail("%s: an event's data is not a transfer as documented:\n%s%s", what, describe(errs), data)
			}
		}
	} else {
		resp := &http.Response{StatusCode: rec.status, Header: rec.Header(), Body: io.NopCloser(bytes.NewReader(out)), Request: r}
		if ok, errs := c.v.ValidateHttpResponse(req(body), resp); !ok {
			c.fail("%s: the answer is not as documented:\n%s%s", what, describe(errs), out)
			return
		}
	}
	if rec.status < 300 {
		_, pattern := c.routes.Handler(r)
		c.mu.Lock()
		c.covered[pattern]++
		c.mu.Unlock()
	}
}

// teeWriter keeps a copy of what the handler writes (events included:
// it passes Flush and the ResponseController's calls through).
type teeWriter struct {
	http.ResponseWriter
	status int
	buf    bytes.Buffer
	wrote  bool
}

func (w *teeWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *teeWriter) Write(p []byte) (int, error) {
	w.wrote = true
	w.buf.Write(p)
	return w.ResponseWriter.Write(p)
}

func (w *teeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestOpenAPIExchanges calls every route of the API, each exchange
// validated against the document (apiSetup's specCheck), and then checks
// that each documented operation was validated at least once.
func TestOpenAPIExchanges(t *testing.T) {
	t.Parallel()
	var b *bundle
	// Registered before apiSetup's cleanups, so it runs after the server
	// closed and its streams were checked.
	t.Cleanup(func() {
		b.spec.mu.Lock()
		defer b.spec.mu.Unlock()
		for _, p := range b.srv.APIPatterns() {
			if b.spec.covered[p] == 0 {
				t.Errorf("%s: no validated exchange", p)
			}
		}
	})
	b = apiSetup(t)
	queue := testenv.UniqueName("q")
	key := testenv.UniqueName("k")
	body := putBody(queue, "bucket-api", "spec.txt", `,"max_retry":2,"timeout":"1m","process_in":"1h"`)
	resp, out := b.call(t, "POST", "/api/v1/transfers", producerToken, body, "Idempotency-Key", key)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enqueue: %d %s", resp.StatusCode, out)
	}
	id := decodeTransfer(t, out).TaskID
	if resp, out := b.call(t, "POST", "/api/v1/transfers", producerToken, body, "Idempotency-Key", key); resp.StatusCode != http.StatusOK {
		t.Fatalf("retry: %d %s", resp.StatusCode, out)
	}
	for _, p := range []string{"/api/v1/transfers/" + id, "/api/v1/transfers?limit=5&state=pending&type=put&queue=" + queue, "/api/v1/openapi.json",
		"/api/v1/throughput", "/api/v1/workers", "/api/v1/transfers/" + id + "/parts"} {
		if resp, out := b.call(t, "GET", p, viewerToken, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, out)
		}
	}
	// A migration's report (none yet: it is pending) and its re-run command.
	mig := fmt.Appendf(nil, `{"type":"migrate","queue":%q,"payload":{"source":{"bucket":"bucket-api","key":"from/"},"dest":{"bucket":"bucket-api2","key":"to/"}}}`, queue)
	resp, out = b.call(t, "POST", "/api/v1/transfers", producerToken, mig)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enqueue a migration: %d %s", resp.StatusCode, out)
	}
	if resp, out := b.call(t, "GET", "/api/v1/transfers/"+decodeTransfer(t, out).TaskID+"/report", viewerToken, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("report: %d %s", resp.StatusCode, out)
	}
	// The global stream: wait for an event of this transfer.
	_, r := b.stream(t, "/api/v1/events", viewerToken, "Last-Event-ID", "1")
	for {
		if _, tr := readSSE(t, r); tr.TaskID == id {
			break
		}
	}
	if resp, out := b.call(t, "POST", "/api/v1/transfers/"+id+"/cancel", producerToken, nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", resp.StatusCode, out)
	}
	// The transfer's stream ends with a terminal state: publish one.
	publish(t, b.rdb, tasks.Progress{TaskID: id, Type: tasks.TypePut, State: tasks.StateCancelled, UpdatedAt: time.Now()})
	_, r = b.stream(t, "/api/v1/transfers/"+id+"/events", viewerToken)
	for {
		if _, tr := readSSE(t, r); tr.State.Terminal() {
			break
		}
	}
	// Error answers are validated too.
	b.call(t, "GET", "/api/v1/transfers/nope-"+key, viewerToken, nil)
	b.call(t, "POST", "/api/v1/transfers", viewerToken, body)
	b.call(t, "GET", "/api/v1/transfers?limit=0", viewerToken, nil)
	b.call(t, "GET", "/api/v1/events", viewerToken, nil, "Last-Event-ID", "yesterday")

}
