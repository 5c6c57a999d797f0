package storage_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
)

// recordingTracker records the UploadTracker calls it gets.
type recordingTracker struct {
	mu         sync.Mutex
	calls      []string
	failStarts bool
}

func (r *recordingTracker) add(s string) {
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
}

func (r *recordingTracker) Starting(_ context.Context, key string) error {
	r.add("Starting " + key)
	return nil
}

func (r *recordingTracker) Started(_ context.Context, key, id string) error {
	r.add("Started " + key)
	if r.failStarts {
		return errors.New("registry down")
	}
	return nil
}

func (r *recordingTracker) Ended(_ context.Context, key, id string) { r.add("Ended " + key) }

// TestUploadTrackerSeesEveryUpload: the multipart uploads storage creates
// by itself — PutLarge's and a multipart server-side copy's — are announced
// before they are created, recorded once they exist and ended after
// Complete; an upload whose Started fails is aborted at once, never left.
func TestUploadTrackerSeesEveryUpload(t *testing.T) {
	t.Parallel()
	srv := testenv.S3(t)
	ctx := context.Background()
	s := open(t, srv, func(c *storage.Config) {
		c.MultipartCopyThreshold = storage.MinPartSize
		c.CopyPartSize = storage.MinPartSize
	})
	data := randBytes(t, 2*storage.MinPartSize+3)
	tr := &recordingTracker{}
	if _, err := s.PutLarge(ctx, "large", bytes.NewReader(data), &storage.LargeOptions{PartSize: storage.MinPartSize, Tracker: tr}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Copy(ctx, "large", "copy", &storage.CopyOptions{Tracker: tr}); err != nil {
		t.Fatal(err)
	}
	want := []string{"Starting large", "Started large", "Ended large", "Starting copy", "Started copy", "Ended copy"}
	if !slices.Equal(tr.calls, want) {
		t.Errorf("tracker calls %q, want %q", tr.calls, want)
	}

	failing := &recordingTracker{failStarts: true}
	_, err := s.PutLarge(ctx, "unrecorded", bytes.NewReader(data), &storage.LargeOptions{PartSize: storage.MinPartSize, Tracker: failing})
	if err == nil || !strings.Contains(err.Error(), "registry down") {
		t.Errorf("PutLarge with a failing Started: %v, want the tracker's error", err)
	}
	if ups, err := s.ListMultipartUploads(ctx, ""); err != nil || len(ups) != 0 {
		t.Errorf("uploads left after a failed Started: %+v (%v)", ups, err)
	}
}
