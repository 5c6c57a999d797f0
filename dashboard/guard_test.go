package dashboard_test

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/internal/testenv"
)

// doHost sends a request with Host set to host (what a browser sends for a
// page on that name, whatever address the name resolved to).
func (b *bundle) doHost(t *testing.T, method, path, host string) (*http.Response, string) {
	t.Helper()
	return b.do(t, method, path, "Host", host)
}

func (b *bundle) port(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(b.ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

// TestHostRebinding: a page on evil.example whose name was re-pointed at
// 127.0.0.1 (DNS rebinding) reaches the dashboard's socket, but its requests
// carry Host: evil.example and are refused: no data, no action. The
// dashboard's own names are served.
func TestHostRebinding(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, queue := enqueuePending(t, b.client)
	port := b.port(t)
	evil := "evil.example:" + port
	for _, path := range []string{"/", "/api/transfers", "/api/transfers/" + id, "/monitoring/api/queues", "/metrics"} {
		resp, body := b.doHost(t, http.MethodGet, path, evil)
		if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(body, "--public-name evil.example") {
			t.Errorf("GET %s with Host %s: %d %q; want 421 saying how to allow the name", path, evil, resp.StatusCode, body)
		}
	}
	// A rebinding page posts from its own origin: same-origin for the
	// browser, so only the Host check stops it.
	resp, body := b.do(t, http.MethodPost, "/api/transfers/"+id+"/cancel", "Host", evil, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("rebinding cancel: %d %s; want 421", resp.StatusCode, body)
	}
	if info, err := b.client.Inspector().GetTaskInfo(queue, id); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("task after a rebinding cancel: %v, %v; want pending", info, err)
	}
	// Every loopback spelling of the bind address is this dashboard.
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST:" + port, "[::1]:" + port, "127.0.0.1", "localhost"} {
		if resp, body := b.doHost(t, http.MethodGet, "/api/transfers", host); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /api/transfers with Host %s: %d %s; want 200", host, resp.StatusCode, body)
		}
	}
	// Bound to loopback, an IP of another interface is not this dashboard.
	if resp, body := b.doHost(t, http.MethodGet, "/api/transfers", "10.1.2.3:"+port); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("GET with Host 10.1.2.3 on a loopback dashboard: %d %s; want 421", resp.StatusCode, body)
	}
}

// TestHostPublicNames: configured public names are served, in any case and
// with a trailing dot; a name with a port only on that port; other names
// are still refused. A dashboard on every interface also answers to IP
// addresses (probes, port-forwards), which DNS rebinding cannot produce.
func TestHostPublicNames(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *dashboard.Config) {
		c.Addr, c.AuthToken = ":8080", testToken
		c.PublicNames = []string{"dash.example.com", "Ops.Example.com:8443"}
	})
	port := b.port(t)
	auth := []string{"Authorization", "Bearer " + testToken}
	for host, want := range map[string]int{
		"dash.example.com":          http.StatusOK,
		"dash.example.com:" + port:  http.StatusOK,
		"DASH.EXAMPLE.COM.:443":     http.StatusOK,
		"ops.example.com:8443":      http.StatusOK,
		"ops.example.com:" + port:   http.StatusMisdirectedRequest,
		"evil.example:" + port:      http.StatusMisdirectedRequest,
		"dash.example.com.evil.net": http.StatusMisdirectedRequest,
		"10.1.2.3:" + port:          http.StatusOK,
		"[fd00::5]:" + port:         http.StatusOK,
		"localhost:" + port:         http.StatusOK,
	} {
		resp, body := b.do(t, http.MethodGet, "/api/transfers", append([]string{"Host", host}, auth...)...)
		if resp.StatusCode != want {
			t.Errorf("Host %q: %d %.200s; want %d", host, resp.StatusCode, body, want)
		}
	}
	// The refusal names the public names and how to add one.
	_, body := b.do(t, http.MethodGet, "/", append([]string{"Host", "evil.example"}, auth...)...)
	for _, want := range []string{"dash.example.com", "ops.example.com:8443", "--public-name evil.example", "FERRY_DASHBOARD_PUBLIC_NAMES"} {
		if !strings.Contains(body, want) {
			t.Errorf("the refusal lacks %q: %s", want, body)
		}
	}
}

// TestMonitoringActionsWithToken: with a token asynqmon's actions work.
func TestMonitoringActionsWithToken(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *dashboard.Config) { c.AuthToken = testToken })
	id, queue := enqueuePending(t, b.client)
	resp, body := b.do(t, http.MethodDelete, "/monitoring/api/queues/"+queue+"/pending_tasks/"+id, "Authorization", "Bearer "+testToken)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("asynqmon delete with the token: %d %s; want 204", resp.StatusCode, body)
	}
	if _, err := b.client.Inspector().GetTaskInfo(queue, id); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("task after asynqmon's delete: %v; want not found", err)
	}
}

// TestNewRefusesExposure: New refuses a dashboard others can reach without a
// real token, and a token that is not one.
func TestNewRefusesExposure(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	for _, c := range []struct {
		addr, token string
		names       []string
		want        error
	}{
		{":8080", "", nil, dashboard.ErrTokenRequired},
		{"0.0.0.0:8080", "", nil, dashboard.ErrTokenRequired},
		{"[::]:8080", "", nil, dashboard.ErrTokenRequired},
		{"192.168.1.5:8080", "", nil, dashboard.ErrTokenRequired},
		{"dash.internal:8080", "", nil, dashboard.ErrTokenRequired},
		{"127.0.0.1:8080", "REPLACE-ME", nil, dashboard.ErrWeakToken},
		{":8080", "REPLACE-ME", nil, dashboard.ErrWeakToken},
		{"127.0.0.1:8080", "", []string{"https://dash.example.com"}, nil},
	} {
		_, err := dashboard.New(dashboard.Config{Redis: rdb, Addr: c.addr, AuthToken: c.token, PublicNames: c.names})
		switch {
		case err == nil:
			t.Errorf("New(Addr %q, token %q, names %q) succeeded; want an error", c.addr, c.token, c.names)
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("New(Addr %q, token %q): %v; want %v", c.addr, c.token, err, c.want)
		case c.token != "" && strings.Contains(err.Error(), c.token):
			t.Errorf("the error shows the token: %v", err)
		}
	}
	for _, addr := range []string{"", "127.0.0.1:8080", "localhost:8080", "[::1]:0"} {
		srv, err := dashboard.New(dashboard.Config{Redis: rdb, Addr: addr})
		if err != nil {
			t.Errorf("New(Addr %q) without a token: %v; want ok on loopback", addr, err)
			continue
		}
		_ = srv.Close()
	}
}

func TestCheckToken(t *testing.T) {
	t.Parallel()
	for token, ok := range map[string]bool{
		"":                                    false,
		"REPLACE-ME":                          false,
		"replace_me_with_a_real_token_please": false,
		"changeme-changeme-changeme":          false,
		"<your-token-goes-here-0123456789>":   false,
		"${FERRY_DASHBOARD_TOKEN}":            false,
		"$FERRY_DASHBOARD_TOKEN_FROM_ENV":     false,
		"t0ken":                               false,
		"0123456789abcde":                     false, // 15
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":    false,
		"abababababababababababababababab":    false,
		testToken + "\n":                      false,
		testToken + " ":                       false,
		"0123456789abcdef":                    true, // 16
		testToken:                             true,
		"hJ3+k9/QmZ1x2Yw8VbN4pL6tR0sE7uA5cD=": true, // base64
	} {
		err := dashboard.CheckToken(token)
		if (err == nil) != ok {
			t.Errorf("CheckToken(%q) = %v; want ok %v", token, err, ok)
		}
		if err != nil && (!errors.Is(err, dashboard.ErrWeakToken) || !strings.Contains(err.Error(), "openssl rand -hex 32")) {
			t.Errorf("CheckToken(%q) = %v; want ErrWeakToken saying how to make one", token, err)
		}
	}
}

// TestMonitoringReadOnlyWithoutToken: without an auth token asynqmon's
// actions are refused, whoever reaches the port: the task stays.
func TestMonitoringReadOnlyWithoutToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, queue := enqueuePending(t, b.client)
	for _, m := range []struct{ method, path string }{
		{http.MethodDelete, "/monitoring/api/queues/" + queue + "/pending_tasks/" + id},
		{http.MethodPost, "/monitoring/api/queues/" + queue + "/pending_tasks/" + id + ":archive"},
		{http.MethodPost, "/monitoring/api/queues/" + queue + ":pause"},
		{http.MethodDelete, "/monitoring/api/queues/" + queue + "/pending_tasks:delete_all"},
	} {
		resp, body := b.do(t, m.method, m.path)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "token") {
			t.Errorf("%s %s without a token: %d %q; want 403 saying a token enables it", m.method, m.path, resp.StatusCode, body)
		}
	}
	info, err := b.client.Inspector().GetTaskInfo(queue, id)
	if err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("task after refused asynqmon actions: %v, %v; want pending", info, err)
	}
	qi, err := b.client.Inspector().GetQueueInfo(queue)
	if err != nil || qi.Paused {
		t.Errorf("queue after a refused pause: %+v, %v; want not paused", qi, err)
	}
	// Reading works.
	if resp, body := b.get(t, "/monitoring/api/queues/"+queue+"/pending_tasks"); resp.StatusCode != http.StatusOK || !strings.Contains(body, id) {
		t.Errorf("asynqmon list without a token: %d %.200s; want 200 with the task", resp.StatusCode, body)
	}
}
