package storage_test

import (
	"errors"
	"testing"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
)

// TestMoveFromOntoItself: two handles on one bucket of one client are one
// object store, so a MoveFrom of a key onto itself is refused before any
// request and the object is kept (MoveFrom once compared the handles by
// pointer, then copied the object onto itself and deleted it).
func TestMoveFromOntoItself(t *testing.T) {
	t.Parallel()
	srv := testenv.S3(t)
	ctx := t.Context()
	client := newClient(t, profile(srv))
	bucket := srv.Bucket(t)
	a, _ := client.Bucket(bucket)
	b, _ := client.Bucket(bucket)
	if _, err := a.PutBytes(ctx, "only/copy", []byte("precious"), nil); err != nil {
		t.Fatal(err)
	}
	// With metadata to set, S3 accepts a copy onto itself.
	_, err := b.MoveFrom(ctx, a, "only/copy", "only/copy", &storage.CopyOptions{Metadata: map[string]string{"moved": "1"}})
	if got, gerr := a.GetBytes(ctx, "only/copy"); string(got) != "precious" {
		t.Fatalf("DATA LOST: after MoveFrom onto itself (err %v) the object holds %q (%v), want %q", err, got, gerr, "precious")
	}
	if !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("MoveFrom onto itself through a second handle = %v, want ErrInvalidKey", err)
	}
}
