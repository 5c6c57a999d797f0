package worker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// TestMigratePerObjectFailures is issue 17's fourth case: an object the
// destination cannot take — a 1,006-byte source key that is 1,027 bytes
// under the destination prefix, a folder marker the provider refuses with
// AccessDenied — fails that object only. The others are copied, the report
// names each failed key with its reason, the migration ends failed with the
// report, and a re-run copies nothing again and fails only those. Before,
// the long key failed the whole migration with nothing copied and no key
// named.
func TestMigratePerObjectFailures(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *worker.Config) {
		proxy := interceptProxy(t, c.Profiles["default"].EndpointURL, func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodPut || !strings.HasSuffix(r.URL.Path, "/") {
				return false
			}
			writeS3Error(w, http.StatusForbidden, "AccessDenied", "folder markers are not allowed here")
			return true
		})
		noMarkers := c.Profiles["default"]
		noMarkers.EndpointURL = proxy.URL
		c.Profiles["nomarkers"] = noMarkers
	})
	b.start(t)
	ctx := context.Background()
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	dst := b.storageOn(t, dstBucket)
	long := testenv.LongKey("long/")
	for _, k := range []string{"long/ok-1", "long/ok-2", "long/ok-3", long} {
		if _, err := src.PutBytes(ctx, k, []byte("data of "+k[:9]), nil); err != nil {
			t.Fatal(err)
		}
	}
	b.s3.PutObject(t, b.bucket, "long/dir/", nil, nil)
	const dstPrefix = testenv.LongKeyDest // 1,006 - 5 + 26 = 1,027 bytes
	p := tasks.MigratePayload{Source: tasks.Location{Key: "long/"}, Dest: tasks.Location{Profile: "nomarkers", Key: dstPrefix}}

	for run, want := range []struct{ copied, skipped int64 }{{3, 0}, {0, 3}} {
		prog, rep := migrateRun(t, b, dstBucket, p)
		if prog.State != tasks.StateFailed || rep.Copied != want.copied || rep.Skipped != want.skipped || rep.Failed != 2 || rep.Listed != 5 {
			t.Errorf("run %d: %s (%s) %+v; want failed with %d copied, %d skipped, 2 failed", run+1, prog.State, prog.Error, rep, want.copied, want.skipped)
		}
		if r := rep.Failures[long]; !strings.Contains(r, "1024") {
			t.Errorf("run %d: failure of the long key: %q, want the reason (S3's 1,024-byte limit)", run+1, r)
		}
		if r := rep.Failures["long/dir/"]; !strings.Contains(r, "permission denied") {
			t.Errorf("run %d: failure of the refused marker: %q, want permission denied", run+1, r)
		}
		if len(rep.Failures) != 2 {
			t.Errorf("run %d: failures %v, want exactly the two", run+1, rep.Failures)
		}
	}
	for _, k := range []string{"ok-1", "ok-2", "ok-3"} {
		if got, err := dst.GetBytes(ctx, dstPrefix+k); err != nil || string(got) != "data of long/"+k {
			t.Errorf("%s%s: %q, %v", dstPrefix, k, got, err)
		}
	}
}

// TestMigrateRunAgain: an archived migration run again as it is (asynqmon's
// "run", the same task id) starts from the beginning and decides from the
// destination as it is now, instead of finding its earlier run's finished
// state and reporting it again: a destination object deleted in between is
// copied again, the object that cannot be written fails again, and the
// counts are this run's.
func TestMigrateRunAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	ctx := context.Background()
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	dst := b.storageOn(t, dstBucket)
	long := "again/" + strings.Repeat("k", 200) + "/" + strings.Repeat("k", 200) + "/" + strings.Repeat("k", 200) + "/" + strings.Repeat("k", 200) + "/" + strings.Repeat("k", 200)
	for _, k := range []string{"again/a", "again/b", long} {
		if _, err := src.PutBytes(ctx, k, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	p := tasks.MigratePayload{Source: s3loc("", b.bucket, "again/"), Dest: s3loc("", dstBucket, "a/much/longer/destination/")}
	id := b.enq(t)(tasks.NewMigrateTask(p))
	if prog := b.wait(t, id, time.Minute); prog.State != tasks.StateFailed {
		t.Fatalf("first run: %+v", prog)
	}
	if rep := migrateReport(t, b, id); rep.Copied != 2 || rep.Failed != 1 {
		t.Fatalf("first run: %+v", rep)
	}
	if err := dst.Delete(ctx, "a/much/longer/destination/b"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // asynq records when it failed in whole seconds
	runAt := time.Now().Truncate(time.Second)
	if err := b.client.Inspector().RunTask(b.queue, id); err != nil {
		t.Fatal(err)
	}
	ti := b.info(t, id)
	for deadline := time.Now().Add(time.Minute); ti.State != asynq.TaskStateArchived || ti.LastFailedAt.Before(runAt); ti = b.info(t, id) {
		if time.Now().After(deadline) {
			t.Fatalf("the migration run again did not end: %s, last failed at %s", ti.State, ti.LastFailedAt)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var rep worker.MigrateReport
	if err := json.Unmarshal(ti.Result, &rep); err != nil {
		t.Fatalf("report %q: %v", ti.Result, err)
	}
	if rep.Copied != 1 || rep.Skipped != 1 || rep.Failed != 1 || rep.Listed != 3 {
		t.Errorf("run again: %+v; want the deleted object copied, the other identical, the long key failed", rep)
	}
	if got, err := dst.GetBytes(ctx, "a/much/longer/destination/b"); err != nil || string(got) != "x" {
		t.Errorf("the deleted destination object was not copied again: %q, %v", got, err)
	}
}
