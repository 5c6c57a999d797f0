package tasks_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ferryhq/ferry/tasks"
)

// TestProgressFieldsRoundTrip sets every field of Progress to a non-zero
// value and sends it through the hash encoding: a field added to Progress
// without an encoding, or with one that loses it, fails here.
func TestProgressFieldsRoundTrip(t *testing.T) {
	t.Parallel()
	var want tasks.Progress
	v := reflect.ValueOf(&want).Elem()
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		switch {
		case sf.Type == reflect.TypeFor[time.Time]():
			f.Set(reflect.ValueOf(time.Date(2026, 3, 1, 10, 0, i, 123456789, time.UTC)))
		case f.Kind() == reflect.String:
			f.SetString(fmt.Sprintf("value of %s", sf.Name))
		case f.Kind() == reflect.Int || f.Kind() == reflect.Int64:
			f.SetInt(int64(1<<40 + i))
		case f.Kind() == reflect.Float64:
			f.SetFloat(1.5e8 + float64(i))
		case sf.Type == reflect.TypeFor[map[string]int64]():
			f.Set(reflect.ValueOf(map[string]int64{"copied": 10, "skipped": int64(i)}))
		default:
			t.Fatalf("Progress.%s is a %s: give it a value here, and an encoding in newProgressCodec", sf.Name, sf.Type)
		}
	}
	h := map[string]string{}
	for k, val := range want.Fields() {
		s, ok := val.(string)
		if !ok {
			t.Fatalf("Fields()[%q] is a %T, want a string", k, val)
		}
		h[k] = s
	}
	got, err := tasks.ParseProgress(want.TaskID, h)
	if err != nil {
		t.Fatalf("ParseProgress: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hash round trip mismatch (-want +got):\n%s", diff)
	}

	// The hash fields are the JSON names, the id aside (the key holds it).
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	if _, ok := js["task_id"]; !ok {
		t.Errorf("JSON %s has no task_id", b)
	}
	delete(js, "task_id")
	for k := range js {
		if _, ok := h[k]; !ok {
			t.Errorf("JSON field %q is not a hash field (hash: %v)", k, h)
		}
	}
	if len(h) != len(js) {
		t.Errorf("%d hash fields, %d JSON fields besides task_id: want one per field", len(h), len(js))
	}
}

// TestProgressHashFieldsStable pins the hash field names workers have
// written since the first release: a rename breaks a rolling upgrade (an old
// dashboard reading a new worker's hash), so it must be a deliberate change
// of this list and of docs.
func TestProgressHashFieldsStable(t *testing.T) {
	t.Parallel()
	fields := tasks.Progress{State: tasks.StateActive}.Fields()
	for _, name := range []string{"type", "state", "bytes_done", "bytes_total", "parts_done", "parts_total",
		"resumed_from", "rate", "started_at", "updated_at", "error", "source", "dest", "counters"} {
		if _, ok := fields[name]; !ok {
			t.Errorf("hash field %q is gone: old readers need it", name)
		}
	}
	if _, ok := fields["task_id"]; ok {
		t.Error("task_id is a hash field; the key holds it")
	}
}
