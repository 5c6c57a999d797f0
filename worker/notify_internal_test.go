package worker

import (
	"testing"

	"github.com/ferryhq/ferry/tasks"
)

// TestNotifyTarget: a transfer's own notify URL wins, then its queue's
// default, then its destination profile's, an empty profile being
// "default"'s.
func TestNotifyTarget(t *testing.T) {
	t.Parallel()
	w := &Worker{cfg: Config{
		WebhookQueueDefaults:   map[string]string{"critical": "https://q.example/critical"},
		WebhookProfileDefaults: map[string]string{"default": "https://p.example/default", "r2": "https://p.example/r2"},
	}}
	dest := func(profile string) tasks.Location { return tasks.Location{Profile: profile, Bucket: "b", Key: "k"} }
	for _, tc := range []struct {
		desc  string
		p     transferEnds
		queue string
		want  string
	}{
		{"own notify wins", transferEnds{Notify: &tasks.Notify{URL: "https://own.example/"}, Dest: dest("r2")}, "critical", "https://own.example/"},
		{"queue over profile", transferEnds{Dest: dest("r2")}, "critical", "https://q.example/critical"},
		{"named profile", transferEnds{Dest: dest("r2")}, "low", "https://p.example/r2"},
		{"empty profile is default", transferEnds{Dest: dest("")}, "low", "https://p.example/default"},
		{"no default", transferEnds{Dest: dest("other")}, "low", ""},
	} {
		if got := w.notifyTarget(tc.p, tc.queue); got != tc.want {
			t.Errorf("%s: notifyTarget = %q, want %q", tc.desc, got, tc.want)
		}
	}
}
