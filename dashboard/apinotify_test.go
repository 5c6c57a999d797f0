package dashboard_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/internal/testenv"
)

// TestAPINotify: POST /api/v1/transfers takes notify as an option or in the
// payload; a URL the workers' allowlist refuses (loopback, the metadata
// service, an unlisted host), one with credentials, or notify given twice is
// a 400 naming the field and the reason, and nothing is enqueued.
func TestAPINotify(t *testing.T) {
	t.Parallel()
	b := apiSetup(t, func(c *dashboard.Config) { c.WebhookAllow = []string{"hooks.example.com"} })
	queue := testenv.UniqueName("q")
	payloadNotify := func(url string) string {
		return `{"type":"put","queue":"` + queue + `","payload":{"source":{"data":"aGVsbG8="},"dest":{"bucket":"bucket-api","key":"n.txt"},"notify":{"url":"` + url + `"}}}`
	}
	for _, tc := range []struct {
		desc, body, field, want string
	}{
		{"loopback option", string(putBody(queue, "bucket-api", "n.txt", `,"notify":{"url":"http://127.0.0.1:8080/hook"}`)),
			"notify", "127.0.0.1 is a loopback address"},
		{"metadata service in the payload", payloadNotify("http://169.254.169.254/latest/meta-data/"),
			"payload.notify", "169.254.169.254 is the cloud metadata service"},
		{"unlisted host", string(putBody(queue, "bucket-api", "n.txt", `,"notify":{"url":"https://evil.example.net/hook"}`)),
			"notify", `host "evil.example.net" is not on webhook_allow [hooks.example.com]`},
		{"credentials", payloadNotify("https://me:hunter2@hooks.example.com/hook"),
			"payload.notify", "user:password@"},
		{"given twice", strings.Replace(payloadNotify("https://hooks.example.com/a"), `"queue"`, `"notify":{"url":"https://hooks.example.com/b"},"queue"`, 1),
			"notify", "given twice"},
		{"not a URL", string(putBody(queue, "bucket-api", "n.txt", `,"notify":{"url":"hooks.example.com/x"}`)),
			"notify", `scheme ""`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			resp, out := b.call(t, "POST", "/api/v1/transfers", producerToken, []byte(tc.body))
			checkRefused(t, resp, out, http.StatusBadRequest, tc.want, tc.field, "hunter2")
		})
	}
	if n := queueLen(t, b.client, queue); n != 0 {
		t.Fatalf("refused requests enqueued %d tasks", n)
	}

	resp, out := b.call(t, "POST", "/api/v1/transfers", producerToken, putBody(queue, "bucket-api", "n.txt", `,"notify":{"url":"https://hooks.example.com/ferry?tenant=7"}`))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("allowed notify: %d %s", resp.StatusCode, out)
	}
	info, err := b.client.Lookup(context.Background(), decodeTransfer(t, out).TaskID)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Notify struct{ URL string } `json:"notify"`
	}
	if err := json.Unmarshal(info.Payload, &p); err != nil || p.Notify.URL != "https://hooks.example.com/ferry?tenant=7" {
		t.Errorf("enqueued payload %s: notify %q (%v)", info.Payload, p.Notify.URL, err)
	}
	if n := queueLen(t, b.client, queue); n != 1 {
		t.Errorf("queue holds %d tasks, want 1", n)
	}
}
