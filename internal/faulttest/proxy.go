package faulttest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Faults says what a Proxy injects. Each probability is per request and
// checked in this order; the first that fires decides the request's fate.
// The zero value injects nothing.
type Faults struct {
	// SlowDown answers 503 SlowDown (S3's throttling error) without
	// forwarding the request.
	SlowDown float64
	// ServerError answers 500 InternalError without forwarding the request.
	ServerError float64
	// Reset breaks the connection mid-transfer: for a request with a body
	// (an UploadPart, a PutObject) after reading about half of it; for a
	// GET after forwarding about half of the response body.
	Reset float64
	// FlipRequest flips one bit, at a random offset, in the body of a
	// request that has one (an UploadPart, a PutObject) and forwards it:
	// what a faulty TLS-terminating middlebox, NIC or RAM does. Over https
	// the SDK signs no payload hash (UNSIGNED-PAYLOAD), so only a checksum
	// computed by the client before sending can catch it.
	FlipRequest float64
	// FlipResponse flips one bit, at a random offset, in the body of a GET
	// response.
	FlipResponse float64
	// Latency delays a request by a random duration up to Latency, with
	// probability LatencyProb (1 when zero and Latency is set).
	Latency     time.Duration
	LatencyProb float64
	// Match limits faults to some requests; nil means every request.
	Match func(*http.Request) bool
	// Hold keeps a request in the proxy for the duration it returns (0:
	// not held), before forwarding it or, when after is true, after the
	// server answered and before the answer goes back. A test arms it to
	// keep a worker inside one request (a CompleteMultipartUpload, a
	// DeleteObjects) long enough to SIGKILL it there: held before, the
	// server never sees the request; held after, the server acted and the
	// worker never learns it. A hold ends early when the client goes away.
	// Hold is called for every request, whatever Match says; it may read
	// and replace r.Body.
	Hold func(r *http.Request) (d time.Duration, after bool)
}

// Fault kinds, as counted by Proxy.Counts.
const (
	KindRequests    = "requests"
	KindSlowDown    = "slowdown_503"
	KindServerError = "internal_500"
	KindResetBody   = "reset_mid_request_body"
	KindResetGet    = "reset_mid_response_body"
	KindLatency     = "latency"
	KindFlipRequest = "bitflip_request_body"
	KindFlipGet     = "bitflip_response_body"
	KindHeld        = "held"
)

// Proxy is a reverse proxy in front of an S3 server that injects faults. It
// keeps the client's Host header, so SigV4 signatures made for the proxy's
// address stay valid upstream.
type Proxy struct {
	// URL is the proxy's address, http://127.0.0.1:port (https:// for
	// NewTLSProxy).
	URL string

	target *url.URL
	ln     net.Listener
	srv    *http.Server
	rp     *httputil.ReverseProxy

	mu     sync.Mutex
	faults Faults
	rng    *rand.Rand

	countMu sync.Mutex
	counts  map[string]int64
}

// faultKey marks a request whose response body gets a fault (its value is
// the kind: KindResetGet or KindFlipGet).
type faultKey struct{}

// holdKey marks a request whose answer is held (its value: how long).
type holdKey struct{}

// NewProxy starts a proxy to target (http://host:port) on a free loopback port.
func NewProxy(target string, f Faults) (*Proxy, error) { return newProxy(target, f, false) }

// NewTLSProxy is NewProxy serving https with a self-signed certificate for
// 127.0.0.1 and localhost (clients skip verification: storage.Config
// VerifySSL false): a TLS-terminating middlebox. Over https the SDK sends
// parts unsigned, so bit flips it injects are caught only by checksums.
func NewTLSProxy(target string, f Faults) (*Proxy, error) { return newProxy(target, f, true) }

func newProxy(target string, f Faults, useTLS bool) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("proxy target: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	scheme := "http://"
	if useTLS {
		cert, err := selfSigned()
		if err != nil {
			ln.Close()
			return nil, err
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https://"
	}
	p := &Proxy{URL: scheme + ln.Addr().String(), target: u, ln: ln, faults: f,
		rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), counts: map[string]int64{}}
	p.rp = httputil.NewSingleHostReverseProxy(u)
	p.rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second}
	// Injected faults make the proxy complain; that is the point.
	p.rp.ErrorLog = log.New(io.Discard, "", 0)
	p.rp.ModifyResponse = func(resp *http.Response) error {
		if d, ok := resp.Request.Context().Value(holdKey{}).(time.Duration); ok {
			sleepCtx(resp.Request.Context(), d)
		}
		switch resp.Request.Context().Value(faultKey{}) {
		case KindResetGet:
			if resp.ContentLength > 1 {
				resp.Body = &cutReader{rc: resp.Body, left: resp.ContentLength / 2}
			}
		case KindFlipGet:
			if resp.ContentLength > 0 && resp.StatusCode/100 == 2 {
				p.count(KindFlipGet)
				resp.Body = p.flipper(resp.Body, resp.ContentLength)
			}
		}
		return nil
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// SetFaults replaces the faults injected from now on.
func (p *Proxy) SetFaults(f Faults) {
	p.mu.Lock()
	p.faults = f
	p.mu.Unlock()
}

// Counts returns how many requests the proxy saw and how many faults of
// each kind it injected.
func (p *Proxy) Counts() map[string]int64 {
	p.countMu.Lock()
	defer p.countMu.Unlock()
	m := make(map[string]int64, len(p.counts))
	for k, v := range p.counts {
		m[k] = v
	}
	return m
}

// Injected is the number of faults injected so far (latency not counted).
func (p *Proxy) Injected() int64 {
	c := p.Counts()
	return c[KindSlowDown] + c[KindServerError] + c[KindResetBody] + c[KindResetGet] + c[KindFlipRequest] + c[KindFlipGet]
}

// String formats Counts for a log line, sorted.
func (p *Proxy) String() string {
	c := p.Counts()
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for _, k := range keys {
		s += k + "=" + strconv.FormatInt(c[k], 10) + " "
	}
	return s
}

// Close stops the proxy.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return p.srv.Close()
	}
	return err
}

func (p *Proxy) count(kind string) {
	p.countMu.Lock()
	p.counts[kind]++
	p.countMu.Unlock()
}

// decide picks the fate of one request.
func (p *Proxy) decide(r *http.Request) (kind string, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.faults
	if f.Match != nil && !f.Match(r) {
		return "", 0
	}
	if f.Latency > 0 && (f.LatencyProb == 0 || p.rng.Float64() < f.LatencyProb) {
		delay = time.Duration(p.rng.Int64N(int64(f.Latency)) + 1)
	}
	x := p.rng.Float64()
	switch {
	case x < f.SlowDown:
		return KindSlowDown, delay
	case x < f.SlowDown+f.ServerError:
		return KindServerError, delay
	case x < f.SlowDown+f.ServerError+f.Reset:
		if r.Method == http.MethodGet {
			return KindResetGet, delay
		}
		if r.ContentLength > 1 {
			return KindResetBody, delay
		}
	case x < f.SlowDown+f.ServerError+f.Reset+f.FlipRequest:
		if r.ContentLength > 0 && (r.Method == http.MethodPut || r.Method == http.MethodPost) {
			return KindFlipRequest, delay
		}
	case x < f.SlowDown+f.ServerError+f.Reset+f.FlipRequest+f.FlipResponse:
		if r.Method == http.MethodGet {
			return KindFlipGet, delay
		}
	}
	return "", delay
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.count(KindRequests)
	p.mu.Lock()
	hold := p.faults.Hold
	p.mu.Unlock()
	if hold != nil {
		if d, after := hold(r); d > 0 {
			p.count(KindHeld)
			if after {
				r = r.WithContext(context.WithValue(r.Context(), holdKey{}, d))
			} else if !sleepCtx(r.Context(), d) {
				return // the client went away: never forwarded
			}
		}
	}
	kind, delay := p.decide(r)
	if delay > 0 {
		p.count(KindLatency)
		time.Sleep(delay)
	}
	switch kind {
	case KindSlowDown:
		p.count(kind)
		s3Error(w, r, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case KindServerError:
		p.count(kind)
		s3Error(w, r, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	case KindResetBody:
		p.count(kind)
		_, _ = io.CopyN(io.Discard, r.Body, r.ContentLength/2)
		resetConn(w)
	case KindResetGet:
		p.count(kind)
		p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), faultKey{}, kind)))
	case KindFlipRequest:
		p.count(kind)
		r.Body = p.flipper(r.Body, r.ContentLength)
		p.rp.ServeHTTP(w, r)
	case KindFlipGet:
		// Counted when the response has a body to flip.
		p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), faultKey{}, kind)))
	default:
		p.rp.ServeHTTP(w, r)
	}
}

// sleepCtx sleeps for d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// s3Error answers like S3 does, after draining the request body so the
// client reads the answer rather than a broken pipe.
func s3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>faulttest</RequestId></Error>`, code, msg)
}

// resetConn closes the client connection with a TCP RST (SO_LINGER 0).
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	c, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// cutReader fails after left bytes: the reverse proxy then aborts the
// response mid-body and closes the connection.
type cutReader struct {
	rc   io.ReadCloser
	left int64
}

var errCut = errors.New("faulttest: response cut")

func (c *cutReader) Read(b []byte) (int, error) {
	if c.left <= 0 {
		return 0, errCut
	}
	if int64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.rc.Read(b)
	c.left -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.rc.Close() }

// flipper returns body with one bit flipped at a random offset below size.
func (p *Proxy) flipper(body io.ReadCloser, size int64) io.ReadCloser {
	p.mu.Lock()
	at, bit := p.rng.Int64N(size), byte(1)<<p.rng.IntN(8)
	p.mu.Unlock()
	return &flipReader{rc: body, at: at, bit: bit}
}

// flipReader flips bit in the byte at offset at of the stream.
type flipReader struct {
	rc  io.ReadCloser
	off int64
	at  int64
	bit byte
}

func (f *flipReader) Read(b []byte) (int, error) {
	n, err := f.rc.Read(b)
	if f.at >= f.off && f.at < f.off+int64(n) {
		b[f.at-f.off] ^= f.bit
	}
	f.off += int64(n)
	return n, err
}

func (f *flipReader) Close() error { return f.rc.Close() }

// selfSigned makes a certificate for 127.0.0.1 and localhost, valid a day.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("proxy certificate: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "faulttest proxy"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("proxy certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
