package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
)

// copyProxy is the test server behind a testenv.CountingProxy that can
// change what the server answers about ETags.
type copyProxy struct {
	*testenv.CountingProxy
	mu sync.Mutex
	// copyETag, when set, replaces the ETag of a CopyObject's answer
	// ("none" removes it); headETag, when set, the ETag a HEAD answers.
	copyETag, headETag string
}

func (p *copyProxy) answer(copyETag, headETag string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.copyETag, p.headETag = copyETag, headETag
}

var copyResultETag = regexp.MustCompile(`<ETag>[^<]*</ETag>`)

// modify changes the ETags of answers as answer said.
func (p *copyProxy) modify(r *http.Response) error {
	p.mu.Lock()
	copyETag, headETag := p.copyETag, p.headETag
	p.mu.Unlock()
	switch {
	case r.Request.Method == http.MethodHead && headETag != "":
		r.Header.Set("ETag", `"`+headETag+`"`)
	case r.Request.Method == http.MethodPut && r.Request.Header.Get("X-Amz-Copy-Source") != "" && copyETag != "" && r.StatusCode == http.StatusOK:
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		r.Body.Close()
		repl := "<ETag>&quot;" + copyETag + "&quot;</ETag>"
		if copyETag == "none" {
			repl = ""
		}
		body = copyResultETag.ReplaceAll(body, []byte(repl))
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	return nil
}

// countingBuckets is n fresh buckets of srv through one client whose
// requests pass a copyProxy.
func countingBuckets(t *testing.T, srv *testenv.S3Server, n int) ([]*storage.S3, *copyProxy) {
	t.Helper()
	cp := &copyProxy{}
	cp.CountingProxy = testenv.NewCountingProxy(t, srv.Endpoint, cp.modify)
	cfg := profile(srv)
	cfg.EndpointURL = cp.URL
	return buckets(t, srv, newClient(t, cfg), n), cp
}

// TestCopyListed (issue 12): CopyListed copies a listed object with one
// request, and the copy has the source's bytes, headers and metadata
// exactly; the answer's ETag proves it. An answer that does not (no ETag,
// as with KMS on some providers) is checked by a HEAD; one the HEAD
// contradicts fails. A source replaced since the listing is
// ErrSourceChanged with nothing written, and a listed ETag that is no plain
// MD5 is refused before any request.
func TestCopyListed(t *testing.T) {
	t.Parallel()
	srv := headerServer(t)
	ctx := context.Background()
	bs, cp := countingBuckets(t, srv, 2)
	a, b := bs[0], bs[1]
	data := randBytes(t, 1000)
	srv.PutObject(t, a.Bucket(), "obj", data, testenv.StoredHeaders)
	src, err := a.Info(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	listed := storage.StoredFile{Key: "obj", Size: src.Size, ETag: src.ETag}

	_, _ = cp.Take()
	f, err := b.CopyListed(ctx, a, listed, "copy")
	if err != nil {
		t.Fatal(err)
	}
	if got, heads := cp.Take(); got[http.MethodPut] != 1 || len(got) != 1 {
		t.Errorf("CopyListed sent %v (HEADs of %v); want one PUT (CopyObject) only", got, heads)
	}
	if f.Key != "copy" || f.Size != src.Size || f.ETag != src.ETag || f.LastModified.IsZero() {
		t.Errorf("CopyListed = %+v; want key copy, %d bytes, ETag %s, a LastModified", f, src.Size, src.ETag)
	}
	d, err := b.Info(ctx, "copy")
	if err != nil {
		t.Fatal(err)
	}
	if d.Headers != src.Headers || !maps.Equal(d.Metadata, src.Metadata) || d.ETag != src.ETag || d.Size != src.Size {
		t.Errorf("copy is %+v; want the source's headers, metadata, ETag and size exactly: %+v", d, src)
	}
	if got, _ := b.GetBytes(ctx, "copy"); !bytes.Equal(got, data) {
		t.Errorf("copy holds %d bytes that are not the source's", len(got))
	}

	// The answer without an ETag: a HEAD proves the copy.
	cp.answer("none", "")
	_, _ = cp.Take()
	if f, err := b.CopyListed(ctx, a, listed, "copy-unproven"); err != nil || f.ETag != src.ETag || f.Size != src.Size {
		t.Errorf("CopyListed answered without an ETag = %+v, %v; want the copy as a HEAD shows it", f, err)
	}
	if got, heads := cp.Take(); got[http.MethodPut] != 1 || got[http.MethodHead] != 1 || len(heads) != 1 || !strings.HasSuffix(heads[0], "/copy-unproven") {
		t.Errorf("CopyListed answered without an ETag sent %v, HEADs of %v; want the copy and a HEAD of it", got, heads)
	}
	// The answer and the HEAD name other bytes (another MD5): the copy is
	// not the source's, whatever the server says otherwise.
	other := strings.Repeat("0", 32)
	cp.answer(other, other)
	if _, err := b.CopyListed(ctx, a, listed, "copy-bad"); err == nil || !strings.Contains(err.Error(), "copy verification failed") {
		t.Errorf("CopyListed whose copy has another MD5 = %v; want copy verification failed", err)
	}
	// The HEAD shows another ETag than the copy answered.
	cp.answer(other, "")
	if _, err := b.CopyListed(ctx, a, listed, "copy-bad2"); err == nil || !strings.Contains(err.Error(), "copy verification failed") {
		t.Errorf("CopyListed whose copy was written again = %v; want copy verification failed", err)
	}
	cp.answer("", "")

	// Replaced since listed: refused, nothing written.
	srv.PutObject(t, a.Bucket(), "obj", randBytes(t, 1000), nil)
	if _, err := b.CopyListed(ctx, a, listed, "stale"); !errors.Is(err, storage.ErrSourceChanged) {
		t.Errorf("CopyListed of a replaced source = %v; want ErrSourceChanged", err)
	}
	if _, err := b.Info(ctx, "stale"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("CopyListed of a replaced source wrote the destination (%v)", err)
	}

	// Not a plain MD5: refused before any request.
	_, _ = cp.Take()
	for _, etag := range []string{src.ETag + "-2", "", "xyz"} {
		if _, err := b.CopyListed(ctx, a, storage.StoredFile{Key: "obj", Size: 1000, ETag: etag}, "multi"); err == nil || !strings.Contains(err.Error(), "not a plain MD5") {
			t.Errorf("CopyListed with ETag %q = %v; want refused as not a plain MD5", etag, err)
		}
	}
	if got, _ := cp.Take(); len(got) != 0 {
		t.Errorf("CopyListed with ETags that are no MD5 sent %v; want nothing", got)
	}
}

// TestCopyFromProvenByAnswer (issue 12): a CopyObject whose answer proves
// the copy (the source's plain MD5 ETag) is not read back by CopyFrom: one
// request when the caller gives the source's Info, and the result is what
// a HEAD shows. MoveFrom still reads its destination back before it
// deletes the source.
func TestCopyFromProvenByAnswer(t *testing.T) {
	t.Parallel()
	srv := headerServer(t)
	ctx := context.Background()
	bs, cp := countingBuckets(t, srv, 2)
	a, b := bs[0], bs[1]
	srv.PutObject(t, a.Bucket(), "obj", randBytes(t, 1000), testenv.StoredHeaders)
	src, err := a.Info(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	for _, meta := range []map[string]string{nil, {"extra": "1"}} {
		_, _ = cp.Take()
		f, err := b.CopyFrom(ctx, a, "obj", "copy", &storage.CopyOptions{Source: &src, Metadata: meta})
		if err != nil {
			t.Fatal(err)
		}
		if got, heads := cp.Take(); got[http.MethodPut] != 1 || len(got) != 1 {
			t.Errorf("metadata %v: CopyFrom of a known source sent %v (HEADs of %v); want one PUT (CopyObject) only", meta, got, heads)
		}
		d, err := b.Info(ctx, "copy")
		if err != nil {
			t.Fatal(err)
		}
		if f.Size != d.Size || f.ETag != d.ETag || f.Headers != d.Headers || !maps.Equal(f.Metadata, d.Metadata) || f.Checksum != d.Checksum {
			t.Errorf("metadata %v: CopyFrom = %+v; a HEAD shows %+v", meta, f, d)
		}
	}
	// An answer that does not prove it: read back.
	cp.answer("none", "")
	_, _ = cp.Take()
	if _, err := b.CopyFrom(ctx, a, "obj", "copy2", &storage.CopyOptions{Source: &src}); err != nil {
		t.Fatal(err)
	}
	if got, heads := cp.Take(); got[http.MethodHead] != 1 || len(heads) != 1 || !strings.HasSuffix(heads[0], "/copy2") {
		t.Errorf("CopyFrom answered without an ETag sent %v, HEADs of %v; want a HEAD of the copy", got, heads)
	}
	cp.answer("", "")
	_, _ = cp.Take()
	if _, err := b.MoveFrom(ctx, a, "obj", "moved", nil); err != nil {
		t.Fatal(err)
	}
	if _, heads := cp.Take(); !containsSuffix(heads, "/moved") {
		t.Errorf("MoveFrom sent HEADs of %v; want one of its destination before it deletes the source", heads)
	}
}

func containsSuffix(list []string, suffix string) bool {
	for _, s := range list {
		if strings.HasSuffix(s, suffix) {
			return true
		}
	}
	return false
}
