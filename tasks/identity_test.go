package tasks_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// TestEnqueueRefusesSameObject: with the profiles' endpoints and prefixes
// (ClientOptions.ProfileFunc), Enqueue refuses a copy or move onto itself
// through two profile names, and a migration between overlapping prefixes,
// and enqueues nothing; transfers between distinct objects go through.
func TestEnqueueRefusesSameObject(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	gw := tasks.ProfileInfo{EndpointURL: "http://127.0.0.1:7070", Region: "us-east-1"}
	known := map[string]tasks.ProfileInfo{
		"default": gw,
		"archive": {EndpointURL: "http://127.0.0.1:7070/", Region: "us-east-1", Prefix: "archive/"},
		"upper":   {EndpointURL: "HTTP://127.0.0.1:7070", Region: "us-east-1"},
		"other":   {EndpointURL: "http://127.0.0.1:7071"},
	}
	c := tasks.NewClient(rdb, func(o *tasks.ClientOptions) {
		o.ProfileFunc = func(name string) (tasks.ProfileInfo, bool) { p, ok := known[name]; return p, ok }
	})
	queue := testenv.UniqueName("q")
	loc := func(profile, key string) tasks.Location {
		return tasks.Location{Profile: profile, Bucket: "bkt", Key: key}
	}
	move := func(src, dst tasks.Location) *asynq.Task {
		task, err := tasks.NewMoveTask(tasks.MovePayload{Source: src, Dest: dst})
		if err != nil {
			t.Fatal(err)
		}
		return task
	}
	copyTask := func(src, dst tasks.Location) *asynq.Task {
		task, err := tasks.NewCopyTask(tasks.CopyPayload{Source: src, Dest: dst})
		if err != nil {
			t.Fatal(err)
		}
		return task
	}
	migrate := func(src, dst tasks.Location) *asynq.Task {
		task, err := tasks.NewMigrateTask(tasks.MigratePayload{Source: src, Dest: dst})
		if err != nil {
			t.Fatal(err)
		}
		return task
	}
	for _, tc := range []struct {
		desc    string
		task    *asynq.Task
		wantErr string // "" means enqueued
		is      error
	}{
		{desc: "move through the archive prefix (issue 11)", task: move(loc("default", "archive/x.txt"), loc("archive", "x.txt")),
			wantErr: `s3://bkt/archive/x.txt via profile "default" and s3://bkt/x.txt via profile "archive" are the same object s3://bkt/archive/x.txt at http://127.0.0.1:7070`,
			is:      tasks.ErrSameObject},
		{desc: "copy through an upper-case endpoint", task: copyTask(loc("default", "k"), loc("upper", "k")), wantErr: "are the same object", is: tasks.ErrSameObject},
		{desc: "migrate into its own prefix through the archive profile", task: migrate(loc("default", ""), loc("archive", "photos/")),
			wantErr: "the migration would copy its own output", is: tasks.ErrOverlap},
		{desc: "move to another endpoint", task: move(loc("default", "k"), loc("other", "k"))},
		{desc: "move under the prefix, another key", task: move(loc("default", "x.txt"), loc("archive", "x.txt"))},
		{desc: "unknown profile: the worker decides", task: move(loc("default", "k"), loc("nowhere", "k"))},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			info, err := c.Enqueue(t.Context(), tc.task, asynq.Queue(queue))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Enqueue: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, tc.is) {
				t.Fatalf("Enqueue = %v, %v; want an error containing %q matching %v", info, err, tc.wantErr, tc.is)
			}
		})
	}
}
