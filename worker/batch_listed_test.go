package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// TestBatchCopyListedIsOneRequest (issue 12): a server-side batch copy
// whose item carries its source's listed ETag (a plain MD5) sends one
// request, a CopyObject, and nothing else: no HEAD of the source, none of
// the copy. The copy has the source's bytes, headers and user metadata
// exactly, and no ferry-* record. A source replaced after it was listed is
// copied in its new version (the pinned CopyObject is refused, the item
// copies what a HEAD finds), not failed.
func TestBatchCopyListedIsOneRequest(t *testing.T) {
	t.Parallel()
	var reqs *testenv.CountingProxy
	b := setup(t, func(c *worker.Config) { reqs = requestCountingProfile(t, c, "counted") })
	if !b.s3.Real {
		t.Skip("gofakes3 does not store these headers; needs versitygw (make tools)")
	}
	b.start(t)
	ctx := context.Background()
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	dst := b.storageOn(t, dstBucket)

	const n = 5
	var items []tasks.BatchItem
	want := map[string][]byte{}
	for i := range n {
		key := fmt.Sprintf("listed/obj-%d", i)
		data := randomBytes(1 + i*1000)
		b.s3.PutObject(t, b.bucket, key, data, testenv.StoredHeaders)
		f, err := src.Info(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if !storage.IsMD5ETag(f.ETag) {
			t.Fatalf("%s: ETag %q is not a plain MD5", key, f.ETag)
		}
		items = append(items, tasks.BatchItem{Source: s3loc("counted", b.bucket, key), Dest: s3loc("counted", dstBucket, key),
			Size: f.Size, SourceETag: `"` + f.ETag + `"`})
		want[key] = data
	}
	_, _ = reqs.Take()
	id := b.enq(t)(tasks.NewBatchTask(tasks.BatchPayload{Items: items, Concurrency: 2}))
	if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("batch ended %+v (%s)", p, b.info(t, id).LastErr)
	}
	if _, res := batchResult(t, b, id); res.Done != n || res.Failed != 0 {
		t.Errorf("result %+v; want %d done", res, n)
	}
	if got, heads := reqs.Take(); got[http.MethodPut] != n || len(got) != 1 {
		t.Errorf("%d listed copies sent %v (HEADs of %v); want %d PUTs (CopyObject) and nothing else", n, got, heads, n)
	}
	checkCopies(t, src, dst, want, func(key string, s, d storage.StoredFile) {
		if s.Headers != d.Headers || !maps.Equal(s.Metadata, d.Metadata) || d.ETag != s.ETag {
			t.Errorf("%s: copy has headers %+v, metadata %v, ETag %s; want the source's %+v, %v, %s exactly",
				key, d.Headers, d.Metadata, d.ETag, s.Headers, s.Metadata, s.ETag)
		}
		b.s3.CheckHeaders(t, dstBucket, key, testenv.StoredHeaders)
	})

	// Replaced after the listing: the listed ETag no longer matches.
	key := "listed/changed"
	b.s3.PutObject(t, b.bucket, key, randomBytes(3000), testenv.StoredHeaders)
	listed, err := src.Info(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	now := randomBytes(4000)
	b.s3.PutObject(t, b.bucket, key, now, map[string]string{"Content-Type": "application/x-new", "x-amz-meta-v": "2"})
	id = b.enq(t)(tasks.NewBatchTask(tasks.BatchPayload{Items: []tasks.BatchItem{{Source: s3loc("counted", b.bucket, key),
		Dest: s3loc("counted", dstBucket, key), Size: listed.Size, SourceETag: listed.ETag}}}))
	if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("batch with a source changed since listed ended %+v (%s); want it copied in its new version", p, b.info(t, id).LastErr)
	}
	if got := mustGet(t, dst, key); !bytes.Equal(got, now) {
		t.Errorf("%s: copied %d bytes; want the source's new %d", key, len(got), len(now))
	}
	if d, err := dst.Info(ctx, key); err != nil || d.ContentType != "application/x-new" || d.Metadata["v"] != "2" || d.Metadata["ferry-task-id"] != id {
		t.Errorf("%s: %+v (%v); want the new version's headers and metadata, and this task's id (the full path)", key, d, err)
	}
}

// TestBatchStreamListedIsGetAndPut (issue 12): a batch item copied across
// endpoints whose item carries the listed ETag reads its source with one
// GET pinned to that ETag, and no HEAD: the GET's answer carries the
// headers and metadata the copy keeps. The copy has the source's bytes,
// headers and user metadata, and ferry's record of its source. A source
// replaced after it was listed is copied in its new version.
func TestBatchStreamListedIsGetAndPut(t *testing.T) {
	t.Parallel()
	var far *testenv.S3Server
	var reqs *testenv.CountingProxy
	b := setup(t, func(c *worker.Config) {
		far = farProfile(t, c)
		p := c.Profiles["far"]
		reqs = testenv.NewCountingProxy(t, p.EndpointURL, nil)
		p.EndpointURL = reqs.URL
		c.Profiles["far"] = p
	})
	if !b.s3.Real {
		t.Skip("gofakes3 does not store these headers; needs versitygw (make tools)")
	}
	b.start(t)
	ctx := context.Background()
	farBucket := far.Bucket(t)
	srcCfg := far.Profile()
	srcCfg.Bucket = farBucket
	src, err := storage.New(ctx, srcCfg)
	if err != nil {
		t.Fatal(err)
	}
	dst := b.storage(t)

	const n = 4
	var items []tasks.BatchItem
	want := map[string][]byte{}
	for i := range n {
		key := fmt.Sprintf("across/obj-%d", i)
		data := randomBytes(1 + i*3000)
		far.PutObject(t, farBucket, key, data, testenv.StoredHeaders)
		f, err := src.Info(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, tasks.BatchItem{Source: s3loc("far", farBucket, key), Dest: s3loc("", b.bucket, key),
			Size: f.Size, SourceETag: f.ETag})
		want[key] = data
	}
	// Replaced after it was listed: the pinned GET is refused, and the
	// item copies the version a HEAD finds.
	changed := "across/changed"
	far.PutObject(t, farBucket, changed, randomBytes(3000), testenv.StoredHeaders)
	listed, err := src.Info(ctx, changed)
	if err != nil {
		t.Fatal(err)
	}
	now := randomBytes(4000)
	far.PutObject(t, farBucket, changed, now, map[string]string{"Content-Type": "application/x-new", "x-amz-meta-v": "2"})
	_, _ = reqs.Take()

	id := b.enq(t)(tasks.NewBatchTask(tasks.BatchPayload{Items: items, Concurrency: 2}))
	if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("batch ended %+v (%s)", p, b.info(t, id).LastErr)
	}
	if got, heads := reqs.Take(); got[http.MethodGet] != n || len(got) != 1 {
		t.Errorf("%d listed copies across endpoints sent %v to the source (HEADs of %v); want %d GETs and nothing else", n, got, heads, n)
	}
	checkCopies(t, src, dst, want, func(key string, s, d storage.StoredFile) {
		if s.Headers != d.Headers || d.Metadata["ferry-source-etag"] != s.ETag || d.Metadata["ferry-task-id"] != id {
			t.Errorf("%s: copy has headers %+v, metadata %v; want the source's headers %+v, its ETag %s recorded and this task's id",
				key, d.Headers, d.Metadata, s.Headers, s.ETag)
		}
		b.s3.CheckHeaders(t, b.bucket, key, testenv.StoredHeaders)
	})

	id = b.enq(t)(tasks.NewBatchTask(tasks.BatchPayload{Items: []tasks.BatchItem{{Source: s3loc("far", farBucket, changed),
		Dest: s3loc("", b.bucket, changed), Size: listed.Size, SourceETag: listed.ETag}}}))
	if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("batch with a source changed since listed ended %+v (%s); want it copied in its new version", p, b.info(t, id).LastErr)
	}
	if got := mustGet(t, dst, changed); !bytes.Equal(got, now) {
		t.Errorf("%s: copied %d bytes; want the source's new %d", changed, len(got), len(now))
	}
	if d, err := dst.Info(ctx, changed); err != nil || d.ContentType != "application/x-new" || d.Metadata["v"] != "2" {
		t.Errorf("%s: %+v (%v); want the new version's headers and metadata", changed, d, err)
	}
}

// checkCopies checks that dst holds each key of want with want's bytes,
// and hands the source's and the copy's StoredFile to check.
func checkCopies(t *testing.T, src, dst *storage.S3, want map[string][]byte, check func(key string, s, d storage.StoredFile)) {
	t.Helper()
	for key, data := range want {
		if got := mustGet(t, dst, key); !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes differ from the source's %d", key, len(got), len(data))
		}
		s, err := src.Info(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		d, err := dst.Info(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		check(key, s, d)
	}
}
