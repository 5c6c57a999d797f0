package storage

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// closingServer answers every request after hold with a small body and
// closes the connection, as versitygw does without --keep-alive. It
// records the most requests it served at once.
type closingServer struct {
	*httptest.Server
	active, peak atomic.Int32
	hold         time.Duration
}

func newClosingServer(t *testing.T, hold time.Duration) *closingServer {
	s := &closingServer{hold: hold}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := s.active.Add(1)
		defer s.active.Add(-1)
		for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
		}
		time.Sleep(s.hold)
		w.Header().Set("Connection", "close")
		w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
		w.Header().Set("Content-Length", "5")
		_, _ = io.WriteString(w, "hello")
	}))
	t.Cleanup(s.Close)
	return s
}

func closingClient(t *testing.T, s *closingServer, pool int) *S3 {
	t.Helper()
	c, err := NewClient(context.Background(), Config{EndpointURL: s.URL, AccessKeyID: "AK", SecretAccessKey: "SK",
		Region: "us-east-1", Provider: ProviderGeneric, MaxPoolConnections: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	st, err := c.Bucket("bucket")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// The profile's max_pool_connections caps requests in flight, and the cap
// is reached against a server that closes every connection: a closing
// connection does not keep a request waiting, and every slot comes back.
func TestInFlightCapsRequests(t *testing.T) {
	const pool, workers, each = 4, 12, 10
	s := newClosingServer(t, 5*time.Millisecond)
	st := closingClient(t, s, pool)
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				if _, err := st.Exists(context.Background(), "k"); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := s.peak.Load(); got != pool {
		t.Fatalf("the server saw at most %d requests at once, want exactly the pool's %d", got, pool)
	}
}

// A body the caller holds open (a Get) holds its slot until closed; a
// request waiting for a slot gives up with its context.
func TestInFlightSlotHeldByOpenBody(t *testing.T) {
	s := newClosingServer(t, 0)
	st := closingClient(t, s, 1)
	ctx := context.Background()
	body, err := st.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := st.Exists(wctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second request while the only slot's body is open: got %v, want it to wait until its deadline", err)
	}
	if err := body.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Exists(ctx, "k"); err != nil {
		t.Fatalf("after the body is closed the slot is free: %v", err)
	}
}

// A slot comes back once: reading to the end and closing release it
// together, never twice (which would let one more request in).
func TestSlotBodyReleasesOnce(t *testing.T) {
	c := newInFlight(nil, 2)
	c.sem <- struct{}{}
	c.sem <- struct{}{}
	b := &slotBody{ReadCloser: io.NopCloser(&readerOf{"abc"}), release: func() { <-c.sem }}
	if _, err := io.ReadAll(b); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	_ = b.Close()
	if got := len(c.sem); got != 1 {
		t.Fatalf("slots taken after one body's end and two closes: %d, want 1", got)
	}
}

type readerOf struct{ s string }

func (r *readerOf) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p, r.s)
	r.s = r.s[n:]
	return n, nil
}
