package storage_test

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
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

// TestMoveKeepsASourceWrittenAgain: Move deletes the version of the source
// it copied, never a newer one. A writer replaces the source while Move
// reads its copy back (the proxy does it as the HEAD of the destination
// passes): Move must keep the source and say it changed. On the old code
// the delete went by key and the newer version was lost.
func TestMoveKeepsASourceWrittenAgain(t *testing.T) {
	t.Parallel()
	srv := testenv.S3(t)
	ctx := t.Context()
	direct := open(t, srv, nil)
	var rewrote atomic.Int64
	proxy := testenv.NewCountingProxy(t, srv.Endpoint, func(r *http.Response) error {
		if r.Request.Method == http.MethodHead && strings.HasSuffix(r.Request.URL.Path, "/moved/doc") && rewrote.Add(1) == 1 {
			_, err := direct.PutBytes(ctx, "src/doc", []byte("second version"), nil)
			return err
		}
		return nil
	})
	cfg := profile(srv)
	cfg.EndpointURL = proxy.URL
	s, err := newClient(t, cfg).Bucket(direct.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.PutBytes(ctx, "src/doc", []byte("first version"), nil); err != nil {
		t.Fatal(err)
	}
	_, err = s.Move(ctx, "src/doc", "moved/doc", nil)
	if got, gerr := direct.GetBytes(ctx, "src/doc"); string(got) != "second version" {
		t.Fatalf("DATA LOST: after Move (err %v) the source holds %q (%v); want the version written during the move kept", err, got, gerr)
	}
	if !errors.Is(err, storage.ErrSourceChanged) || rewrote.Load() == 0 {
		t.Errorf("Move = %v (source rewritten %d times); want ErrSourceChanged", err, rewrote.Load())
	}
}

// TestDeleteVersion: DeleteVersion deletes the version read and nothing
// newer, and tells a key written again (changed, kept) from a key gone
// already (not changed).
func TestDeleteVersion(t *testing.T) {
	t.Parallel()
	s := open(t, testenv.S3(t), nil)
	ctx := t.Context()
	for _, tc := range []struct {
		desc    string
		after   func(key string) error // what happens to the key after it is read
		changed bool
		want    string // the key's bytes afterwards; "" is gone
	}{
		{desc: "unchanged", after: func(string) error { return nil }},
		{desc: "written again", changed: true, want: "v2",
			after: func(key string) error { _, err := s.PutBytes(ctx, key, []byte("v2"), nil); return err }},
		{desc: "gone", after: func(key string) error { return s.Delete(ctx, key) }},
	} {
		key := "dv/" + strings.ReplaceAll(tc.desc, " ", "-")
		if _, err := s.PutBytes(ctx, key, []byte("v1"), nil); err != nil {
			t.Fatal(err)
		}
		read, err := s.Info(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := tc.after(key); err != nil {
			t.Fatal(err)
		}
		changed, err := s.DeleteVersion(ctx, read)
		if err != nil || changed != tc.changed {
			t.Errorf("%s: DeleteVersion = %v, %v; want changed %v", tc.desc, changed, err, tc.changed)
		}
		got, gerr := s.GetBytes(ctx, key)
		if string(got) != tc.want || (tc.want == "" && !errors.Is(gerr, storage.ErrNotFound)) {
			t.Errorf("%s: the key holds %q (%v) after DeleteVersion; want %q", tc.desc, got, gerr, tc.want)
		}
	}
}
