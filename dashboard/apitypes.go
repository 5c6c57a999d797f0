package dashboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/tasks"
)

// apiType is one task type the API enqueues: how to turn the request's
// payload JSON into a task. Validation is the tasks package's: the
// constructor (tasks.NewXxxTask) runs the payload's Validate.
type apiType struct {
	name    string       // the API's name: "upload"
	task    string       // the task type: tasks.TypeUpload
	payload reflect.Type // the payload struct, for decoding errors and OpenAPI
	// build decodes raw strictly, sets notify (the request's option) on the
	// payload, and returns the task with opts, and the source and dest for
	// display (either may be "").
	build func(raw []byte, notify *tasks.Notify, opts []asynq.Option) (t *asynq.Task, src, dst string, size int64, err error)
}

// apiTypes are the task types producers may enqueue over HTTP, by API name.
// The janitor is internal and not among them.
var apiTypes = map[string]apiType{
	"put": newAPIType("put", tasks.TypePut, tasks.NewPutTask, func(p tasks.PutPayload) (tasks.Location, tasks.Location, int64) {
		return p.Source, p.Dest, int64(len(p.Source.Data))
	}),
	"upload": newAPIType("upload", tasks.TypeUpload, tasks.NewUploadTask, func(p tasks.UploadPayload) (tasks.Location, tasks.Location, int64) {
		return p.Source, p.Dest, p.Size
	}),
	"copy": newAPIType("copy", tasks.TypeCopy, tasks.NewCopyTask, func(p tasks.CopyPayload) (tasks.Location, tasks.Location, int64) {
		return p.Source, p.Dest, p.Size
	}),
	"move": newAPIType("move", tasks.TypeMove, tasks.NewMoveTask, func(p tasks.MovePayload) (tasks.Location, tasks.Location, int64) {
		return p.Source, p.Dest, p.Size
	}),
	"delete": newAPIType("delete", tasks.TypeDelete, tasks.NewDeleteTask, func(p tasks.DeletePayload) (tasks.Location, tasks.Location, int64) {
		return tasks.Location{}, p.Dest, 0
	}),
	"migrate": newAPIType("migrate", tasks.TypeMigrate, tasks.NewMigrateTask, func(p tasks.MigratePayload) (tasks.Location, tasks.Location, int64) {
		return p.Source, p.Dest, 0
	}),
	"batch": newAPIType("batch", tasks.TypeBatch, newProducerBatch, func(p tasks.BatchPayload) (tasks.Location, tasks.Location, int64) {
		var size int64
		for _, it := range p.Items {
			size += it.Size
		}
		// Shown like the worker shows it: the first item's destination.
		return tasks.Location{}, p.Items[0].Dest, size
	}),
}

// newProducerBatch is tasks.NewBatchTask for a producer: the migration
// field belongs to the batches a migration enqueues.
func newProducerBatch(p tasks.BatchPayload, opts ...asynq.Option) (*asynq.Task, error) {
	if p.Migration != "" {
		return nil, badRequest("payload.migration", "migration is set only on the batches a migration enqueues: drop it")
	}
	return tasks.NewBatchTask(p, opts...)
}

// apiTypeNames are the keys of apiTypes, sorted.
func apiTypeNames() []string {
	names := make([]string, 0, len(apiTypes))
	for n := range apiTypes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// lookupAPIType accepts the short name ("upload") and the task type
// ("ferry:upload").
func lookupAPIType(name string) (apiType, bool) {
	t, ok := apiTypes[strings.TrimPrefix(name, "ferry:")]
	return t, ok
}

func newAPIType[P any](name, typ string, newTask func(P, ...asynq.Option) (*asynq.Task, error), ends func(P) (tasks.Location, tasks.Location, int64)) apiType {
	return apiType{
		name:    name,
		task:    typ,
		payload: reflect.TypeFor[P](),
		build: func(raw []byte, notify *tasks.Notify, opts []asynq.Option) (*asynq.Task, string, string, int64, error) {
			var p P
			if err := decodeStrict(raw, &p, "payload"); err != nil {
				return nil, "", "", 0, err
			}
			if err := setNotify(&p, notify); err != nil {
				return nil, "", "", 0, err
			}
			t, err := newTask(p, opts...)
			if err != nil {
				ae := validationError(reflect.TypeFor[P](), err)
				if notify != nil && ae.Field == "payload.notify" {
					ae.Field = "notify" // it came as the option
				}
				return nil, "", "", 0, ae
			}
			src, dst, size := ends(p)
			return t, display(src), display(dst), size, nil
		},
	}
}

// setNotify sets the payload's Notify field to the request's notify
// option; giving both is ambiguous and refused.
func setNotify(p any, notify *tasks.Notify) error {
	if notify == nil {
		return nil
	}
	f := reflect.ValueOf(p).Elem().FieldByName("Notify")
	if !f.IsValid() {
		return badRequest("notify", "this type sends no webhooks: drop notify")
	}
	if !f.IsNil() {
		return badRequest("notify", "notify is given twice, as an option and in the payload: give one")
	}
	f.Set(reflect.ValueOf(notify))
	return nil
}

func display(l tasks.Location) string {
	if l.Kind() == tasks.KindInvalid {
		return ""
	}
	return l.String()
}

// apiError is the body of every error answer of the versioned API.
type apiError struct {
	// Code is a stable machine-readable name of the error.
	Code string `json:"code"`
	// Message says what is wrong and how to fix it.
	Message string `json:"error"`
	// Field is the JSON path of the offending request field, when one is.
	Field  string `json:"field,omitempty"`
	status int
}

func (e *apiError) Error() string { return e.Message }

func badRequest(field, format string, args ...any) *apiError {
	return &apiError{status: 400, Code: "invalid_request", Field: field, Message: fmt.Sprintf(format, args...)}
}

// decodeStrict decodes one JSON value from raw into v: unknown fields and
// trailing data are errors, naming the field under prefix.
func decodeStrict(raw []byte, v any, prefix string) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, prefix)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest(prefix, "%s: trailing data after the JSON value: send exactly one JSON object", nonEmpty(prefix, "body"))
	}
	return nil
}

func nonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// jsonError turns an encoding/json error into an apiError naming the field.
func jsonError(err error, prefix string) error {
	join := func(f string) string {
		switch {
		case prefix == "":
			return f
		case f == "":
			return prefix
		}
		return prefix + "." + f
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return badRequest(prefix, "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		return badRequest(join(typ.Field), "%s: expected %s, got JSON %s", nonEmpty(join(typ.Field), "body"), typ.Type, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return badRequest(join(f), "unknown field %q: check the spelling against GET /api/v1/openapi.json", join(f))
	case errors.Is(err, io.EOF):
		return badRequest(prefix, "%s is empty: send a JSON object", nonEmpty(prefix, "body"))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest(prefix, "malformed JSON: the %s ends early", nonEmpty(prefix, "body"))
	}
	return badRequest(prefix, "malformed JSON: %v", err)
}

// validationError turns a payload's Validate error (wrapped by the task
// constructor) into a 400 naming the field: tasks' messages start with the
// field they are about ("dest: ...", "part_size ... is out of range").
func validationError(payload reflect.Type, err error) *apiError {
	inner := err
	if u := errors.Unwrap(err); u != nil {
		inner = u
	}
	msg := inner.Error()
	field := "payload"
	head := msg
	if i := strings.IndexAny(head, ": "); i > 0 {
		head = head[:i]
	}
	if _, ok := jsonFields(payload)[head]; ok {
		field = "payload." + head
	}
	return &apiError{status: 400, Code: "invalid_payload", Field: field, Message: msg}
}

// jsonFields are the JSON names of a struct's fields, embedded ones
// included.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return out
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}
