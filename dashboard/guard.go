package dashboard

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// Who may talk to the dashboard. Three middlewares, in this order, stand
// between the network and every route (Server.routes composes them):
//
//  1. hostCheck refuses a Host header that is not one of the dashboard's
//     names. A web page on evil.example whose DNS name was re-pointed at
//     127.0.0.1 (DNS rebinding) is same-origin with itself, so the browser
//     lets it read answers and post forms; its requests still say
//     Host: evil.example, and that is what is refused.
//  2. tokenAuth requires Config.AuthToken, when set.
//  3. http.CrossOriginProtection refuses cross-site state-changing requests.
//
// CheckAccess refuses, before anything listens, a dashboard that others
// could reach without a real token. Routes added later (an HTTP API) get the
// same protection by being registered on the same mux.

// MinTokenLength is the shortest auth token CheckToken accepts.
const MinTokenLength = 16

// Errors of CheckAccess, for errors.Is: the caller adds how to set a token
// in its own terms (an environment variable, a flag).
var (
	// ErrTokenRequired: the address is reachable from other machines and no
	// token is set.
	ErrTokenRequired = errors.New("an auth token is required")
	// ErrWeakToken: the token is set but is not a real secret.
	ErrWeakToken = errors.New("the auth token is not a real secret")
)

// tokenHowTo ends every token error: what a real token looks like.
const tokenHowTo = "generate one with: openssl rand -hex 32"

// placeholders are words of example tokens in documentation and manifests;
// compared with the token lower-cased and reduced to letters and digits, so
// REPLACE-ME, replace_me and <your-token> are caught.
var placeholders = []string{"replaceme", "changeme", "changeit", "placeholder", "yourtoken", "yoursecret", "example", "dummy"}

// CheckToken returns nil when token can serve as the dashboard's secret: at
// least MinTokenLength characters, not a placeholder from a manifest, not
// an unexpanded ${VARIABLE}, not one character repeated, and only
// characters that travel unchanged in an Authorization header and a cookie
// (printable ASCII without space, quote, comma, semicolon or backslash: a
// trailing newline from a file is the usual culprit). The token itself never
// appears in the error. An empty token is an error too: callers that allow
// no token check for "" first.
func CheckToken(token string) error {
	if token == "" {
		return fmt.Errorf("%w: it is empty; %s", ErrWeakToken, tokenHowTo)
	}
	for _, c := range []byte(token) {
		if c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' {
			return fmt.Errorf("%w: it contains a space, newline, quote, comma, semicolon, backslash or non-ASCII character, which does not survive a header or cookie (a trailing newline from a file?); %s", ErrWeakToken, tokenHowTo)
		}
	}
	if strings.HasPrefix(token, "$") || strings.Contains(token, "${") {
		return fmt.Errorf("%w: it looks like an unexpanded variable (${...}): the environment was not substituted; %s", ErrWeakToken, tokenHowTo)
	}
	norm := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return -1
	}, token)
	for _, p := range placeholders {
		if strings.Contains(norm, p) {
			return fmt.Errorf("%w: it looks like a placeholder (it contains %q); %s", ErrWeakToken, p, tokenHowTo)
		}
	}
	if len(token) < MinTokenLength {
		return fmt.Errorf("%w: it has %d characters; use at least %d, random; %s", ErrWeakToken, len(token), MinTokenLength, tokenHowTo)
	}
	distinct := map[byte]bool{}
	for _, c := range []byte(token) {
		distinct[c] = true
	}
	if len(distinct) < 5 {
		return fmt.Errorf("%w: it repeats %d distinct characters; %s", ErrWeakToken, len(distinct), tokenHowTo)
	}
	return nil
}

// CheckAccess is what New checks before the dashboard serves anything, and
// what a command checks before it listens: a token, when set, is a real one
// (CheckToken); an address that is not loopback-only requires one, because
// without it anyone who reaches the port reads every transfer and cancels
// them; public names are host names. addr is the listen address (empty
// means loopback).
func CheckAccess(addr, authToken string, publicNames []string) error {
	if _, err := newHostPolicy(addr, publicNames); err != nil {
		return err
	}
	if authToken != "" {
		return CheckToken(authToken)
	}
	if !ListensOnLoopbackOnly(addr) {
		return fmt.Errorf("%w: the dashboard listens on %s, which is not a loopback address, so other machines can reach it; %s (or listen on 127.0.0.1)",
			ErrTokenRequired, addr, tokenHowTo)
	}
	return nil
}

// ListensOnLoopbackOnly reports whether a listener on addr (host:port as
// given to net.Listen) is reachable only from this machine: its host is
// "localhost" or a loopback IP. An empty addr counts as loopback (Config.Addr's
// zero value); ":8080" and "0.0.0.0:8080" listen on every interface.
func ListensOnLoopbackOnly(addr string) bool {
	if addr == "" {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return isLoopbackName(host)
}

// isLoopbackName: localhost or a loopback IP (127.0.0.0/8, ::1, and
// ::ffff:127.0.0.1), in any case.
func isLoopbackName(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// hostPolicy decides which Host headers are the dashboard's own.
type hostPolicy struct {
	// anyIP: the dashboard listens on every interface, so every IP address
	// literal is one of its addresses (a pod IP, a node IP, a Service IP). A
	// Host that is an IP literal cannot come from DNS rebinding: the
	// browser sends it only for a URL naming that IP.
	anyIP bool
	// ip is the one non-loopback IP the dashboard listens on, if it does.
	ip netip.Addr
	// names are the public names, lower-case; an entry with a port matches
	// only that port.
	names []string
}

func newHostPolicy(addr string, publicNames []string) (hostPolicy, error) {
	var p hostPolicy
	if addr != "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return p, fmt.Errorf("listen address %q is not host:port (e.g. 127.0.0.1:8080 or :8080): %w", addr, err)
		}
		switch ip, err := netip.ParseAddr(host); {
		case host == "" || (err == nil && ip.IsUnspecified()):
			p.anyIP = true
		case err == nil && !ip.Unmap().IsLoopback():
			p.ip = ip.Unmap()
		case err != nil && !isLoopbackName(host):
			// A host name to listen on is also a name to answer to.
			p.names = append(p.names, strings.ToLower(host))
		}
	}
	for _, n := range publicNames {
		name, err := normalizePublicName(n)
		if err != nil {
			return p, err
		}
		p.names = append(p.names, name)
	}
	return p, nil
}

// normalizePublicName checks a configured public name: a host name or IP,
// optionally with a port, nothing else.
func normalizePublicName(n string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("public name %q %s: give the host name browsers use, e.g. dash.example.com (or dash.example.com:8443 for that port only)", n, why)
	}
	if n == "" {
		return "", bad("is empty")
	}
	if strings.Contains(n, "://") || strings.ContainsAny(n, "/?#@ \t") {
		return "", bad("is not a host name (a URL or a path?)")
	}
	// url.Parse validates the host[:port] syntax, IPv6 brackets included.
	u, err := url.Parse("http://" + n)
	if err != nil || u.Hostname() == "" || u.Host != n {
		return "", bad("is not host or host:port")
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if u.Port() != "" {
		return net.JoinHostPort(host, u.Port()), nil
	}
	return host, nil
}

// allows reports whether hostport (a request's Host) names this dashboard.
func (p hostPolicy) allows(hostport string) bool {
	host, port := hostport, ""
	if h, pt, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, pt
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" {
		return false
	}
	if isLoopbackName(host) {
		return true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if p.anyIP || ip.Unmap() == p.ip {
			return true
		}
	}
	return slices.Contains(p.names, host) || (port != "" && slices.Contains(p.names, net.JoinHostPort(host, port)))
}

// describe lists what the policy answers to, for the refusal message.
func (p hostPolicy) describe() string {
	s := "localhost, 127.0.0.1 and [::1]"
	switch {
	case p.anyIP:
		s += ", any IP address of this machine"
	case p.ip.IsValid():
		s += ", " + p.ip.String()
	}
	if len(p.names) > 0 {
		return s + ", and the public names " + strings.Join(p.names, ", ")
	}
	return s + ", and no public name"
}

// hostCheck refuses, with 421 Misdirected Request, a request whose Host is
// not one of the policy's names, and says how to add the name.
func hostCheck(p hostPolicy, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.allows(r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		name := r.Host
		if h, _, err := net.SplitHostPort(name); err == nil {
			name = h
		}
		http.Error(w, fmt.Sprintf("ferry dashboard: Host %q is not a name of this dashboard, so the request is refused "+
			"(a web page whose DNS name was pointed at this address must not reach it). "+
			"It answers to %s. If you reach it under this name on purpose, add the name: "+
			"ferry dashboard --public-name %s, or FERRY_DASHBOARD_PUBLIC_NAMES=%s, or dashboard.public_names in the config file.",
			r.Host, p.describe(), name, name), http.StatusMisdirectedRequest)
	})
}

// tokenAuth requires the dashboard's token, when set, on every request but
// the health checks: "Authorization: Bearer <token>", or the cookie that a
// valid ?token= sets (then it redirects to the same URL without the token,
// so it stays out of history and logs). Requests to the versioned API
// (/api/v1/) are authenticated by apiAuth instead, where API tokens with
// scopes are valid too. Tokens are compared in constant time.
func tokenAuth(a *authenticator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, apiPrefix) {
			a.apiAuth(w, r, next)
			return
		}
		if !a.hasDash || r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		if auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && a.dashboardToken(auth) {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(tokenCookie); err == nil && a.dashboardToken(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		if q := r.URL.Query(); q.Has("token") && a.dashboardToken(q.Get("token")) {
			http.SetCookie(w, &http.Cookie{
				Name:     tokenCookie,
				Value:    q.Get("token"),
				Path:     "/",
				HttpOnly: true,
				Secure:   r.TLS != nil,
				SameSite: http.SameSiteStrictMode,
			})
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				q.Del("token")
				u := url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: q.Encode()}
				http.Redirect(w, r, u.String(), http.StatusSeeOther)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="ferry dashboard"`)
		http.Error(w, "unauthorized: send Authorization: Bearer <token>, or open the dashboard once with ?token=<token>", http.StatusUnauthorized)
	})
}

// readOnlyActions refuses every request but GET and HEAD with 403 and why.
// asynqmon's own ReadOnly answers 405 to its API only; this guard does not
// depend on how asynqmon routes.
func readOnlyActions(why string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, why, http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
