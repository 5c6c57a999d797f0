package webhook

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
)

// ErrRefused: a webhook URL or address the allowlist does not permit.
// A refusal is permanent: retrying cannot change the configuration.
var ErrRefused = errors.New("webhook URL refused")

// MaxURLLength bounds a webhook URL.
const MaxURLLength = 2048

// RefusedError says which URL or address was refused and why; it wraps
// ErrRefused. Its text names the URL without its query string, which may
// hold something the receiver treats as a secret.
type RefusedError struct {
	URL    string // scheme://host/path
	Reason string
}

func (e *RefusedError) Error() string {
	if e.URL == "" {
		return fmt.Sprintf("%v: %s", ErrRefused, e.Reason)
	}
	return fmt.Sprintf("%v: %s: %s", ErrRefused, e.URL, e.Reason)
}

func (e *RefusedError) Unwrap() error { return ErrRefused }

// Allowlist is the set of hosts a worker delivers webhooks to (the
// webhook_allow setting). The zero value and nil allow nothing.
type Allowlist struct {
	names     []string       // exact host names, lower case
	wildcards []string       // "*.example.com" as ".example.com"
	prefixes  []netip.Prefix // IP and CIDR entries
	entries   []string       // as given, for messages
}

// ParseAllowlist parses webhook_allow entries: a host name
// ("hooks.example.com"), a wildcard for its subdomains ("*.example.com",
// not the name itself), an IP ("127.0.0.1", "::1") or a CIDR
// ("10.1.0.0/16"). Only IP and CIDR entries make loopback, private,
// link-local and other special addresses reachable.
func ParseAllowlist(entries []string) (*Allowlist, error) {
	a := &Allowlist{}
	for i, raw := range entries {
		e := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(raw), "."))
		bad := func(why string) error {
			return fmt.Errorf("webhook_allow[%d] %q: %s", i, raw, why)
		}
		switch {
		case e == "":
			return nil, bad("empty entry")
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, bad("not a CIDR such as 10.1.0.0/16 (no URLs or paths: give the host only)")
			}
			a.prefixes = append(a.prefixes, p.Masked())
		case isIP(e):
			ip, _ := netip.ParseAddr(strings.Trim(e, "[]"))
			ip = ip.Unmap()
			a.prefixes = append(a.prefixes, netip.PrefixFrom(ip, ip.BitLen()))
		case strings.HasPrefix(e, "*."):
			if !validName(e[2:]) {
				return nil, bad("not a host name after \"*.\"")
			}
			a.wildcards = append(a.wildcards, e[1:])
		case strings.Contains(e, ":"):
			return nil, bad("give the host without a port or scheme (any port is allowed)")
		case !validName(e):
			return nil, bad("not a host name, IP or CIDR")
		default:
			a.names = append(a.names, e)
		}
		a.entries = append(a.entries, raw)
	}
	return a, nil
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return err == nil
}

func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// Entries returns the entries as given.
func (a *Allowlist) Entries() []string {
	if a == nil {
		return nil
	}
	return slices.Clone(a.entries)
}

// ParseURL checks what can be checked of a webhook URL without any
// configuration: http or https, a host, no user:password@ (a payload is
// plain text in Redis: the signature is the authentication), at most
// MaxURLLength bytes.
func ParseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, &RefusedError{Reason: "the URL is empty: give the receiver's https:// URL"}
	}
	if len(raw) > MaxURLLength {
		return nil, &RefusedError{Reason: fmt.Sprintf("the URL is %d bytes, more than %d", len(raw), MaxURLLength)}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, &RefusedError{Reason: "the URL does not parse: give an absolute https:// URL"}
	}
	shown := Redact(u)
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, &RefusedError{URL: shown, Reason: fmt.Sprintf("scheme %q: use https:// (or http://)", u.Scheme)}
	case u.User != nil:
		return nil, &RefusedError{URL: shown, Reason: "user:password@ in a webhook URL would be stored in Redis in plain text: remove it; receivers authenticate deliveries by their Ferry-Signature"}
	case u.Hostname() == "":
		return nil, &RefusedError{URL: shown, Reason: "no host"}
	case strings.Contains(u.Host, "%"):
		return nil, &RefusedError{URL: shown, Reason: "an IPv6 zone is not allowed"}
	}
	return u, nil
}

// CheckURL parses raw (ParseURL) and checks its host against the allowlist:
// a host name must match a name or wildcard entry; an IP literal must be
// covered by an IP or CIDR entry. Special addresses (loopback, private,
// link-local, ...) get a reason that says how to allow them. The resolved
// address is checked again at dial time (DialControl).
func (a *Allowlist) CheckURL(raw string) (*url.URL, error) {
	u, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	shown := Redact(u)
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if reason := a.checkIP(ip); reason != "" {
			return nil, &RefusedError{URL: shown, Reason: reason}
		}
		if !a.listsIP(ip) {
			return nil, &RefusedError{URL: shown, Reason: fmt.Sprintf("IP %s is not on webhook_allow [%s]: list the IP or a CIDR containing it, or use an allowed host name", ip, strings.Join(a.Entries(), ", "))}
		}
		return u, nil
	}
	if a == nil || (len(a.names) == 0 && len(a.wildcards) == 0 && len(a.prefixes) == 0) {
		return nil, &RefusedError{URL: shown, Reason: fmt.Sprintf("host %q: webhook_allow is empty, so this worker delivers no webhooks: add the receiver's host to webhook_allow", host)}
	}
	if slices.Contains(a.names, host) || slices.ContainsFunc(a.wildcards, func(w string) bool { return strings.HasSuffix(host, w) }) {
		return u, nil
	}
	return nil, &RefusedError{URL: shown, Reason: fmt.Sprintf("host %q is not on webhook_allow [%s]: add it there, or use an allowed host", host, strings.Join(a.entries, ", "))}
}

// Redact is u as scheme://host/path, without user info, query or fragment,
// for messages and logs.
func Redact(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// checkIP returns why ip may not be reached, or "" when it may: an IP or
// CIDR entry covers it, or it is an ordinary public address.
func (a *Allowlist) checkIP(ip netip.Addr) string {
	if a.listsIP(ip) {
		return ""
	}
	if kind := specialKind(ip); kind != "" {
		return fmt.Sprintf("%s is %s: webhooks never go there unless webhook_allow lists the address itself (%q) or a CIDR containing it", ip, kind, ip.String())
	}
	return ""
}

// listsIP reports whether an IP or CIDR entry covers ip.
func (a *Allowlist) listsIP(ip netip.Addr) bool {
	return a != nil && slices.ContainsFunc(a.prefixes, func(p netip.Prefix) bool { return p.Contains(ip) })
}

// DialControl is a net.Dialer Control function: it refuses a connection to
// an address the allowlist does not permit (see checkIP). It runs after DNS
// resolution, on the address actually dialed, so a host name that resolves
// to a special address at delivery time (DNS rebinding) is refused.
func (a *Allowlist) DialControl(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Reason: fmt.Sprintf("dial %s %q: not an IP address and port", network, address)}
	}
	if reason := a.checkIP(ap.Addr().Unmap()); reason != "" {
		return &RefusedError{Reason: "the host resolved to " + reason}
	}
	return nil
}

// special are the address ranges a webhook must not reach unless listed,
// beyond what netip.Addr's own predicates cover.
var special = []struct {
	prefix netip.Prefix
	kind   string
}{
	{netip.MustParsePrefix("169.254.169.254/32"), "the cloud metadata service (link-local)"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "the cloud metadata service (AWS, IPv6)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a carrier-grade NAT address (100.100.100.200 is a cloud metadata service)"},
	{netip.MustParsePrefix("0.0.0.0/8"), "a \"this network\" address"},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address"},
	{netip.MustParsePrefix("64:ff9b::/96"), "a NAT64 address (it may embed a private IPv4)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a NAT64 address (it may embed a private IPv4)"},
	{netip.MustParsePrefix("2002::/16"), "a 6to4 address (it may embed a private IPv4)"},
}

// specialKind names the kind of a special address, or "" for an ordinary
// public one.
func specialKind(ip netip.Addr) string {
	for _, s := range special {
		if s.prefix.Contains(ip) {
			return s.kind
		}
	}
	switch {
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsUnspecified():
		return "an unspecified address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address"
	case ip.IsPrivate():
		return "a private address"
	case ip.IsMulticast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		return "a multicast address"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	}
	return ""
}
