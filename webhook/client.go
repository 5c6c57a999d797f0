package webhook

import (
	"net"
	"net/http"
	"time"
)

// DefaultTimeout bounds one delivery attempt: connect, TLS, request and
// response together.
const DefaultTimeout = 10 * time.Second

// NewClient returns the HTTP client a worker delivers with: every
// connection goes through a.DialControl (the resolved address is checked),
// no proxy (a proxy would dial on its own, past the check), redirects are
// never followed (the 3xx answer is returned as it is and counts as a failed
// attempt), and the whole attempt is bounded by timeout (zero means
// DefaultTimeout).
func NewClient(a *Allowlist, timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	dialer := &net.Dialer{Timeout: timeout / 2, Control: a.DialControl}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			TLSHandshakeTimeout:   timeout / 2,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
