package testenv

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
)

// CountingProxy is a reverse proxy to an S3 server, on 127.0.0.1, that
// counts the requests it passes on by method and records the path of every
// HEAD: how a test proves what a code path sends (one CopyObject and no
// HEAD, a re-run that writes nothing).
type CountingProxy struct {
	// URL is the proxy's endpoint, for a profile's EndpointURL.
	URL string

	mu    sync.Mutex
	by    map[string]int
	heads []string
}

// NewCountingProxy starts a CountingProxy to endpoint, stopped when tb
// ends. modify, when not nil, may change each answer before the client
// sees it (httputil.ReverseProxy.ModifyResponse).
func NewCountingProxy(tb testing.TB, endpoint string, modify func(*http.Response) error) *CountingProxy {
	tb.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		tb.Fatal(err)
	}
	p := &CountingProxy{by: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = modify
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.by[r.Method]++
		if r.Method == http.MethodHead {
			p.heads = append(p.heads, r.URL.Path)
		}
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// Take returns the requests counted by method and the paths HEADed since
// the last Take, and starts counting afresh.
func (p *CountingProxy) Take() (by map[string]int, heads []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	by, heads = p.by, p.heads
	p.by, p.heads = map[string]int{}, nil
	return by, heads
}
