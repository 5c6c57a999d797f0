package worker

import (
	"context"
	"testing"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// realMigration is a migration of srcBucket/photos/ → dstBucket/photos/
// on the real S3 server, with only what the per-object steps use.
func realMigration(t *testing.T, srv *testenv.S3Server, srcBucket, dstBucket string) *migration {
	t.Helper()
	open := func(bucket string) *storage.S3 {
		cfg := srv.Profile()
		cfg.Bucket = bucket
		s, err := storage.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return &migration{id: testenv.UniqueName("mig"), src: open(srcBucket), dst: open(dstBucket), p: tasks.MigratePayload{
		Source: tasks.Location{Bucket: srcBucket, Key: "photos/"},
		Dest:   tasks.Location{Bucket: dstBucket, Key: "photos/"},
	}}
}

// TestCopyMarkerKeepsAConcurrentWrite: a folder marker the destination's
// listing did not have is written only if it is still not there (If-None-
// Match: *): a marker written at the destination between the listing and
// the migration's PUT is left as its writer made it, and the object is
// reported failed with the reason, not silently overwritten.
func TestCopyMarkerKeepsAConcurrentWrite(t *testing.T) {
	t.Parallel()
	srv := testenv.S3(t)
	srcBucket, dstBucket := srv.Bucket(t), srv.Bucket(t)
	m := realMigration(t, srv, srcBucket, dstBucket)
	srv.PutObject(t, srcBucket, "photos/d/", nil, testenv.ObjectHeaders{"x-amz-meta-from": "source"})
	f := storage.StoredFile{Key: "photos/d/"}
	// Listed: not at the destination. Then someone writes it there.
	srv.PutObject(t, dstBucket, "photos/d/", nil, testenv.ObjectHeaders{"x-amz-meta-writer": "other"})

	d, err := m.copyMarker(t.Context(), f, "photos/d/", false)
	if err != nil {
		t.Fatalf("copyMarker: %v", err)
	}
	got, err := m.dst.Info(t.Context(), "photos/d/")
	if err != nil {
		t.Fatal(err)
	}
	if got.Metadata["writer"] != "other" || got.Metadata["from"] != "" {
		t.Errorf("the concurrent write was overwritten: destination metadata %v", got.Metadata)
	}
	if d.verdict != failed || d.reason == "" {
		t.Errorf("decision %+v; want failed with the reason", d)
	}

	// A marker still absent is written.
	srv.PutObject(t, srcBucket, "photos/e/", nil, testenv.ObjectHeaders{"x-amz-meta-from": "source"})
	if d, err := m.copyMarker(t.Context(), storage.StoredFile{Key: "photos/e/"}, "photos/e/", false); err != nil || d.verdict != copiedAlready {
		t.Fatalf("copyMarker of an absent marker: %+v, %v", d, err)
	}
	if got, err := m.dst.Info(t.Context(), "photos/e/"); err != nil || got.Metadata["from"] != "source" {
		t.Errorf("marker written: %+v, %v", got, err)
	}
}
