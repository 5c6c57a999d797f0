package storage

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// A part larger than the whole budget can never be served: Get must fail at
// once (not wait forever) with advice that works for grown part sizes too.
func TestBufferPoolRefusesPartOverBudget(t *testing.T) {
	pool := NewBufferPool(64 << 20)
	_, err := pool.Get(context.Background(), 525<<20)
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("Get(525 MiB) from a 64 MiB pool = %v, want a *ConfigError", err)
	}
	if ce.Field != "max_buffer_memory" || !strings.Contains(ce.Reason, "raise max_buffer_memory to at least 550502400") {
		t.Fatalf("error does not tell how to fix it: field %q, reason %q", ce.Field, ce.Reason)
	}
	b, err := pool.Get(context.Background(), 64<<20)
	if err != nil || len(b) != 64<<20 {
		t.Fatalf("Get(64 MiB) = %d bytes, %v; want the whole budget", len(b), err)
	}
	pool.Put(b)
}
