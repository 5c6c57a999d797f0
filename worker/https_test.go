package worker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// TestHTTPSSources: https sources from an allowed host, with and without
// range support, small and multipart; a redirect to a host off the
// allowlist is refused and the task archived.
func TestHTTPSSources(t *testing.T) {
	t.Parallel()
	small := make([]byte, 3000)
	big := make([]byte, 2*storage.MinPartSize+77)
	_, _ = rand.Read(small)
	_, _ = rand.Read(big)
	files := map[string][]byte{"/small": small, "/big": big}
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, noRanges := strings.CutPrefix(r.URL.Path, "/noranges")
		if path == "/redirect" {
			http.Redirect(w, r, "https://elsewhere.example/x", http.StatusFound)
			return
		}
		data, ok := files[path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if noRanges {
			// A server that ignores Range and does not advertise it.
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			if r.Method != http.MethodHead {
				_, _ = w.Write(data)
			}
			return
		}
		http.ServeContent(w, r, path, time.Unix(1700000000, 0), bytes.NewReader(data))
	}))
	t.Cleanup(ts.Close)
	host, _ := url.Parse(ts.URL)
	b := setup(t, func(c *worker.Config) {
		c.HTTPClient = ts.Client()
		c.AllowURLHosts = []string{host.Hostname()}
	})
	b.start(t)
	s := b.storage(t)
	for _, tc := range []struct {
		desc, path string
		want       []byte
	}{
		{"small, ranges", "/small", small},
		{"multipart, ranges", "/big", big},
		{"small, no ranges", "/noranges/small", small},
		{"multipart, no ranges (streamed)", "/noranges/big", big},
	} {
		key := "https" + tc.path
		id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{URL: ts.URL + tc.path + "?X-Amz-Signature=secret"},
			Dest: s3loc("", b.bucket, key)}))
		p := b.wait(t, id, time.Minute)
		if p.State != tasks.StateCompleted {
			t.Errorf("%s: %+v", tc.desc, p)
			continue
		}
		if strings.Contains(p.Source, "secret") {
			t.Errorf("%s: progress shows the URL's query: %q", tc.desc, p.Source)
		}
		if got := mustGet(t, s, key); !bytes.Equal(got, tc.want) {
			t.Errorf("%s: stored %d bytes that differ from the source's %d", tc.desc, len(got), len(tc.want))
		}
	}
	id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{URL: ts.URL + "/redirect"},
		Dest: s3loc("", b.bucket, "https/redirected")}, asynq.MaxRetry(0)))
	p := b.wait(t, id, time.Minute)
	if p.State != tasks.StateFailed || !strings.Contains(p.Error, "not on allow_url_hosts") {
		t.Errorf("redirect off the allowlist: %+v", p)
	}
	if ok, _ := s.Exists(context.Background(), "https/redirected"); ok {
		t.Error("a redirect off the allowlist wrote an object")
	}
}
