package tasks_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/webhook"
)

// TestNotifyValidation: every transfer type accepts a notify URL and
// refuses a malformed one with a reason that names notify.
func TestNotifyValidation(t *testing.T) {
	t.Parallel()
	dst := tasks.Location{Bucket: "dst-bucket", Key: "k"}
	build := map[string]func(n *tasks.Notify) error{
		"put": func(n *tasks.Notify) error {
			_, err := tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte("x")}, Dest: dst, Notify: n})
			return err
		},
		"upload": func(n *tasks.Notify) error {
			_, err := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: "/data/x"}, Dest: dst, Notify: n})
			return err
		},
		"copy": func(n *tasks.Notify) error {
			_, err := tasks.NewCopyTask(tasks.CopyPayload{Source: tasks.Location{Bucket: "src-bucket", Key: "k"}, Dest: dst, Notify: n})
			return err
		},
		"move": func(n *tasks.Notify) error {
			_, err := tasks.NewMoveTask(tasks.MovePayload{Source: tasks.Location{Bucket: "src-bucket", Key: "k"}, Dest: dst, Notify: n})
			return err
		},
		"delete": func(n *tasks.Notify) error {
			_, err := tasks.NewDeleteTask(tasks.DeletePayload{Dest: dst, Notify: n})
			return err
		},
		"migrate": func(n *tasks.Notify) error {
			_, err := tasks.NewMigrateTask(tasks.MigratePayload{Source: tasks.Location{Bucket: "src-bucket", Key: "p"}, Dest: tasks.Location{Bucket: "dst-bucket", Key: "p"}, Notify: n})
			return err
		},
	}
	for typ, f := range build {
		if err := f(&tasks.Notify{URL: "https://hooks.example.com/ferry"}); err != nil {
			t.Errorf("%s with a notify URL: %v", typ, err)
		}
		for _, tc := range []struct{ url, want string }{
			{"", "notify: webhook URL refused: the URL is empty"},
			{"ftp://hooks.example.com/x", `scheme "ftp"`},
			{"https://u:secret@hooks.example.com/x", "user:password@"},
		} {
			err := f(&tasks.Notify{URL: tc.url})
			if !errors.Is(err, webhook.ErrRefused) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "secret@") {
				t.Errorf("%s with notify %q: %v, want ErrRefused with %q", typ, tc.url, err, tc.want)
			}
		}
	}
}

// TestEnqueueRefusesNotifyOffTheAllowlist: with the workers' allowlist, a
// notify URL they would refuse is refused at enqueue with the reason, and
// nothing is enqueued.
func TestEnqueueRefusesNotifyOffTheAllowlist(t *testing.T) {
	t.Parallel()
	b := setup(t)
	allow, err := webhook.ParseAllowlist([]string{"hooks.example.com", "10.0.0.7"})
	if err != nil {
		t.Fatal(err)
	}
	c := tasks.NewClient(b.rdb, func(o *tasks.ClientOptions) { o.WebhookAllow = allow })
	for _, tc := range []struct{ url, want string }{
		{"http://127.0.0.1:9000/hook", "127.0.0.1 is a loopback address"},
		{"http://169.254.169.254/latest/meta-data/", "169.254.169.254 is the cloud metadata service"},
		{"https://evil.example.net/hook", `host "evil.example.net" is not on webhook_allow [hooks.example.com, 10.0.0.7]`},
	} {
		task, err := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: "/data/x"}, Dest: s3Dst, Notify: &tasks.Notify{URL: tc.url}})
		if err != nil {
			t.Fatalf("%s: the shape is fine, NewUploadTask: %v", tc.url, err)
		}
		_, err = c.Enqueue(context.Background(), task, asynq.Queue(b.queue))
		if !errors.Is(err, webhook.ErrRefused) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Enqueue = %v, want ErrRefused with %q", tc.url, err, tc.want)
		}
	}
	if n, err := b.rdb.LLen(context.Background(), "asynq:{"+b.queue+"}:pending").Result(); err != nil || n != 0 {
		t.Errorf("pending tasks in %s after refusals: %d (%v), want 0", b.queue, n, err)
	}
	for _, url := range []string{"https://hooks.example.com/ferry", "http://10.0.0.7:8080/hook"} {
		task, _ := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: "/data/x"}, Dest: s3Dst, Notify: &tasks.Notify{URL: url}})
		if _, err := c.Enqueue(context.Background(), task, asynq.Queue(b.queue)); err != nil {
			t.Errorf("%s is allowed: %v", url, err)
		}
	}
	// The key counted above is the right one: the two allowed tasks are there.
	if n, _ := b.rdb.LLen(context.Background(), "asynq:{"+b.queue+"}:pending").Result(); n != 2 {
		t.Errorf("pending tasks after two allowed enqueues: %d, want 2", n)
	}
}

func TestNotifyTask(t *testing.T) {
	t.Parallel()
	ev := webhook.Event{ID: "ferry-abc", Type: tasks.TypeUpload, State: webhook.StateFailed, Error: "boom"}
	task, err := tasks.NewNotifyTask(tasks.NotifyPayload{URL: "https://hooks.example.com/x", Event: ev})
	if err != nil {
		t.Fatal(err)
	}
	p, err := tasks.DecodeNotify(task)
	if err != nil || p.Event.EventID != "ferry-abc:failed" || p.Event.Error != "boom" {
		t.Errorf("DecodeNotify = %+v, %v", p, err)
	}
	if strings.Contains(string(task.Payload()), "secret") {
		t.Errorf("payload %s", task.Payload())
	}
	for _, bad := range []tasks.NotifyPayload{
		{URL: "https://hooks.example.com/x", Event: webhook.Event{ID: "x", State: "active"}},
		{URL: "https://hooks.example.com/x", Event: webhook.Event{State: "failed"}},
		{URL: "gopher://x", Event: ev},
	} {
		if _, err := tasks.NewNotifyTask(bad); err == nil {
			t.Errorf("NewNotifyTask(%+v) = nil error", bad)
		}
	}
}
