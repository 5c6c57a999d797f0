package dashboard

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Scope is what an API token may do. Scopes are ordered: each one allows
// everything the ones before it do.
type Scope int

// Scopes of API tokens.
const (
	// ScopeViewer reads transfers and streams their events.
	ScopeViewer Scope = iota + 1
	// ScopeProducer also enqueues and cancels transfers.
	ScopeProducer
	// ScopeAdmin is the dashboard's own token (Config.AuthToken): everything,
	// the pages and asynqmon's actions included.
	ScopeAdmin
)

func (s Scope) String() string {
	switch s {
	case ScopeViewer:
		return "viewer"
	case ScopeProducer:
		return "producer"
	case ScopeAdmin:
		return "admin"
	}
	return "none"
}

// APIToken is a bearer token of the HTTP API and what it may do.
type APIToken struct {
	// Token is the secret, sent as "Authorization: Bearer <token>". It must
	// pass CheckToken; it is never logged (logs name a token by ID).
	Token string
	// Scope is ScopeViewer or ScopeProducer.
	Scope Scope
}

// Defaults of the per-token API rate limit.
const (
	// DefaultAPIRate is requests per second per token.
	DefaultAPIRate = 20
	// DefaultAPIBurst is the requests a token may send at once.
	DefaultAPIBurst = 40
)

// apiPrefix is where the versioned API lives; the authenticator treats it
// apart (bearer tokens with scopes, JSON errors).
const apiPrefix = "/api/v1/"

// caller is who sent an API request: the scope of its token and an id that
// names the token in logs and keys its rate limiter without revealing it.
type caller struct {
	scope Scope
	id    string
}

type callerKey struct{}

func callerFrom(ctx context.Context) (caller, bool) {
	c, ok := ctx.Value(callerKey{}).(caller)
	return c, ok
}

// authenticator knows every token: the dashboard's (admin) and the API's.
// Tokens are kept as SHA-256 digests and compared in constant time, all of
// them on every request, so the time taken says nothing about which matched.
type authenticator struct {
	dashboard [sha256.Size]byte // digest of Config.AuthToken
	hasDash   bool
	api       []tokenEntry
}

type tokenEntry struct {
	digest [sha256.Size]byte
	scope  Scope
	id     string
}

func newAuthenticator(dashToken string, api []APIToken) *authenticator {
	a := &authenticator{}
	if dashToken != "" {
		a.dashboard, a.hasDash = sha256.Sum256([]byte(dashToken)), true
	}
	for _, t := range api {
		d := sha256.Sum256([]byte(t.Token))
		a.api = append(a.api, tokenEntry{digest: d, scope: t.Scope, id: tokenID(d)})
	}
	return a
}

// tokenID names a token in logs: 8 hex digits of its digest, never the token.
func tokenID(d [sha256.Size]byte) string { return "tok-" + hex.EncodeToString(d[:4]) }

// open reports whether no token is configured at all: the dashboard is then
// loopback-only (CheckAccess) and every request has full access.
func (a *authenticator) open() bool { return !a.hasDash && len(a.api) == 0 }

// dashboardToken reports whether got is the dashboard's token.
func (a *authenticator) dashboardToken(got string) bool {
	h := sha256.Sum256([]byte(got))
	return a.hasDash && got != "" && subtle.ConstantTimeCompare(h[:], a.dashboard[:]) == 1
}

// lookup returns the caller a token belongs to.
func (a *authenticator) lookup(got string) (caller, bool) {
	if got == "" {
		return caller{}, false
	}
	h := sha256.Sum256([]byte(got))
	var found caller
	ok := false
	if a.hasDash && subtle.ConstantTimeCompare(h[:], a.dashboard[:]) == 1 {
		found, ok = caller{scope: ScopeAdmin, id: tokenID(a.dashboard)}, true
	}
	for _, e := range a.api {
		if subtle.ConstantTimeCompare(h[:], e.digest[:]) == 1 && !ok {
			found, ok = caller{scope: e.scope, id: e.id}, true
		}
	}
	return found, ok
}

// apiAuth authenticates a request to the versioned API and puts its caller
// in the context: a bearer token (any API token or the dashboard's), or the
// dashboard's cookie (the page's own requests). With no token configured the
// caller is an anonymous admin. Failures are JSON 401s.
func (a *authenticator) apiAuth(w http.ResponseWriter, r *http.Request, next http.Handler) {
	c, ok := caller{scope: ScopeAdmin, id: "anonymous"}, a.open()
	if !ok {
		auth := r.Header.Get("Authorization")
		if tok, isBearer := strings.CutPrefix(auth, "Bearer "); isBearer {
			c, ok = a.lookup(tok)
		} else if ck, err := r.Cookie(tokenCookie); err == nil && auth == "" && a.dashboardToken(ck.Value) {
			c, ok = caller{scope: ScopeAdmin, id: tokenID(a.dashboard)}, true
		}
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ferry api"`)
		msg := "unauthorized: send Authorization: Bearer <token> with a producer or viewer token (FERRY_API_PRODUCER_TOKENS, FERRY_API_VIEWER_TOKENS) or the dashboard's token"
		if r.Header.Get("Authorization") != "" {
			msg = "unauthorized: the bearer token is not one of this server's tokens"
		}
		writeAPIError(w, http.StatusUnauthorized, apiError{Code: "unauthorized", Message: msg})
		return
	}
	next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
}

// limiters holds one token bucket per caller id. Only known tokens (and the
// anonymous caller) get one, so the map is bounded by the configuration.
type limiters struct {
	rate  rate.Limit
	burst int

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func newLimiters(perSecond float64, burst int) *limiters {
	return &limiters{rate: rate.Limit(perSecond), burst: burst, m: make(map[string]*rate.Limiter)}
}

// allow takes one request from id's bucket; when empty it returns how many
// seconds to wait (for Retry-After).
func (l *limiters) allow(id string) (bool, int) {
	l.mu.Lock()
	lim, ok := l.m[id]
	if !ok {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.m[id] = lim
	}
	l.mu.Unlock()
	res := lim.Reserve()
	if d := res.Delay(); d > 0 {
		res.Cancel()
		return false, max(1, int(math.Ceil(d.Seconds())))
	}
	return true, 0
}

// requireScope wraps an API handler: the caller's scope must be at least
// need, and its rate limit not exhausted.
func (s *Server) requireScope(need Scope, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := callerFrom(r.Context())
		if !ok {
			// Not reached through apiAuth: a wiring bug, refuse.
			writeAPIError(w, http.StatusUnauthorized, apiError{Code: "unauthorized", Message: "unauthorized"})
			return
		}
		if c.scope < need {
			writeAPIError(w, http.StatusForbidden, apiError{Code: "forbidden",
				Message: fmt.Sprintf("forbidden: this needs a %s token; yours is a %s token", need, c.scope)})
			return
		}
		if ok, wait := s.limits.allow(c.id); !ok {
			s.log.Info("api: rate limited", zap.String("token", c.id))
			w.Header().Set("Retry-After", strconv.Itoa(wait))
			writeAPIError(w, http.StatusTooManyRequests, apiError{Code: "rate_limited",
				Message: fmt.Sprintf("too many requests for this token: at most %g per second (burst %d); retry after %d s", float64(s.limits.rate), s.limits.burst, wait)})
			return
		}
		h(w, r)
	}
}

// checkAPITokens: every API token is a real secret with a scope, and no
// token is given twice (with two scopes it would be ambiguous). Errors name
// a token by its position and scope, never by its value.
func checkAPITokens(dashToken string, api []APIToken) error {
	seen := map[string]bool{}
	if dashToken != "" {
		seen[dashToken] = true
	}
	for i, t := range api {
		if t.Scope != ScopeViewer && t.Scope != ScopeProducer {
			return fmt.Errorf("API token %d has no scope: give viewer or producer", i+1)
		}
		if err := CheckToken(t.Token); err != nil {
			return fmt.Errorf("%s API token %d: %w", t.Scope, i+1, err)
		}
		if seen[t.Token] {
			return fmt.Errorf("%s API token %d is given twice (or is the dashboard token): each token has one scope; remove the duplicate", t.Scope, i+1)
		}
		seen[t.Token] = true
	}
	return nil
}
