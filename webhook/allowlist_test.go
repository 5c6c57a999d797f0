package webhook_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferryhq/ferry/webhook"
)

func TestParseAllowlist(t *testing.T) {
	t.Parallel()
	if _, err := webhook.ParseAllowlist([]string{"hooks.example.com", "*.example.org", "127.0.0.1", "::1", "10.1.0.0/16", "HOOKS.Example.NET."}); err != nil {
		t.Fatalf("valid entries: %v", err)
	}
	for _, tc := range []struct{ entry, want string }{
		{"", "empty entry"},
		{"https://hooks.example.com", "not a CIDR"},
		{"hooks.example.com:8443", "without a port"},
		{"10.0.0.0/33", "not a CIDR"},
		{"*.", "not a host name"},
		{"bad host", "not a host name"},
	} {
		_, err := webhook.ParseAllowlist([]string{"ok.example.com", tc.entry})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "webhook_allow[1]") {
			t.Errorf("entry %q: %v, want an error naming webhook_allow[1] and %q", tc.entry, err, tc.want)
		}
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	allow, err := webhook.ParseAllowlist([]string{"hooks.example.com", "*.example.org", "127.0.0.1", "10.1.0.0/16", "203.0.113.7"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc, url string
		want      string // "" means allowed, else a part of the reason
	}{
		{"listed name", "https://hooks.example.com/ferry", ""},
		{"listed name, other case and a dot", "https://HOOKS.example.com./ferry", ""},
		{"wildcard subdomain", "https://a.b.example.org/x", ""},
		{"wildcard does not cover the apex", "https://example.org/x", `host "example.org" is not on webhook_allow`},
		{"listed loopback IP with a port", "http://127.0.0.1:8080/hook", ""},
		{"listed CIDR", "http://10.1.2.3/hook", ""},
		{"listed public IP", "https://203.0.113.7/hook", ""},
		{"unlisted public IP", "https://198.51.100.1/hook", "IP 198.51.100.1 is not on webhook_allow"},
		{"other loopback", "http://127.0.0.2/hook", "127.0.0.2 is a loopback address"},
		{"metadata service", "http://169.254.169.254/latest/meta-data/", "169.254.169.254 is the cloud metadata service"},
		{"IPv4-mapped metadata", "http://[::ffff:169.254.169.254]/", "169.254.169.254 is the cloud metadata service"},
		{"link-local", "http://169.254.1.1/", "link-local"},
		{"private", "http://192.168.1.10/", "a private address"},
		{"IPv6 loopback", "http://[::1]:9000/", "::1 is a loopback address"},
		{"unspecified", "http://0.0.0.0/", "0.0.0.0 is"},
		{"not listed", "https://evil.example.net/x", `host "evil.example.net" is not on webhook_allow [hooks.example.com, *.example.org, 127.0.0.1, 10.1.0.0/16, 203.0.113.7]`},
		{"credentials", "https://user:pw@hooks.example.com/x", "user:password@"},
		{"ftp", "ftp://hooks.example.com/x", `scheme "ftp"`},
		{"relative", "/hook", `scheme ""`},
		{"empty", "", "empty"},
		{"too long", "https://hooks.example.com/" + strings.Repeat("a", 3000), "more than 2048"},
	} {
		_, err := allow.CheckURL(tc.url)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: CheckURL(%q) = %v, want allowed", tc.desc, tc.url, err)
		case tc.want != "" && (!errors.Is(err, webhook.ErrRefused) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: CheckURL(%q) = %v, want ErrRefused with %q", tc.desc, tc.url, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "pw@"):
			t.Errorf("%s: the error shows the credentials: %v", tc.desc, err)
		}
	}
	var empty *webhook.Allowlist
	if _, err := empty.CheckURL("https://hooks.example.com/x"); err == nil || !strings.Contains(err.Error(), "webhook_allow is empty") {
		t.Errorf("empty allowlist: %v", err)
	}
	if _, err := empty.CheckURL("https://203.0.113.7/x"); !errors.Is(err, webhook.ErrRefused) {
		t.Errorf("empty allowlist, public IP: %v", err)
	}
}

// TestClientChecksTheDialedAddress: a host name on the allowlist that
// resolves to a loopback address (what DNS rebinding does) is refused when
// dialing, unless the address itself is listed; redirects are not followed.
func TestClientChecksTheDialedAddress(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	_, port, _ := net.SplitHostPort(u.Host)
	viaName := "http://localhost:" + port + "/hook"

	nameOnly, _ := webhook.ParseAllowlist([]string{"localhost"})
	if _, err := nameOnly.CheckURL(viaName); err != nil {
		t.Fatalf("the name is listed: %v", err)
	}
	_, err := webhook.NewClient(nameOnly, 0).Post(viaName, "application/json", strings.NewReader("{}"))
	if !errors.Is(err, webhook.ErrRefused) || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("localhost dialed to a loopback address: %v, want ErrRefused naming loopback", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the server got %d requests through a refused dial", n)
	}

	both, _ := webhook.ParseAllowlist([]string{"localhost", "127.0.0.1", "::1"})
	c := webhook.NewClient(both, 0)
	resp, err := c.Post(viaName, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("loopback listed: %v", err)
	}
	resp.Body.Close()
	resp, err = c.Post(srv.URL+"/redirect", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits.Load() != 2 {
		t.Errorf("redirect: status %d after %d requests, want the 302 itself, not followed", resp.StatusCode, hits.Load())
	}
}
