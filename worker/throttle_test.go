package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// slowDownProxy answers the first n PUTs with 503 SlowDown and passes
// everything else to the S3 server.
func slowDownProxy(t *testing.T, target string, n int64) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var refused atomic.Int64
	ts := interceptProxy(t, target, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || refused.Load() >= n {
			return false
		}
		refused.Add(1)
		writeS3Error(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
		return true
	})
	return ts, &refused
}

// TestMigrateSharedBackoff: the destination throttles (503 SlowDown) long
// enough to fail copies; the migration's copies back off together and the
// migration still completes with every object.
func TestMigrateSharedBackoff(t *testing.T) {
	t.Parallel()
	var proxy *httptest.Server
	var refused *atomic.Int64
	b := setup(t, func(c *worker.Config) {
		proxy, refused = slowDownProxy(t, c.Profiles["default"].EndpointURL, 40)
		// Few items in flight, so that 40 refusals outlast the SDK's own
		// retries of some (with 16, each item's retries absorb them).
		c.BatchConcurrency = 4
		other := c.Profiles["other"]
		other.EndpointURL = proxy.URL
		c.Profiles["other"] = other
	})
	b.start(t)
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	sums := fillSource(t, src, "src/", 60, 0)
	id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: s3loc("", b.bucket, "src/"),
		Dest: s3loc("other", dstBucket, "dst/"), Window: 8}))
	// Watch for the shared backoff while the migration runs.
	var sawBackoff atomic.Bool
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if n, _ := b.rdb.Exists(context.Background(), "ferry:migrate:{"+id+"}:backoff").Result(); n == 1 {
				sawBackoff.Store(true)
			}
		}
	}()
	p := b.wait(t, id, 4*time.Minute)
	close(stop)
	rep := migrateReport(t, b, id)
	if p.State != tasks.StateCompleted || rep.Copied != 60 || rep.Failed != 0 {
		t.Fatalf("throttled migration: %+v / %+v", p, rep)
	}
	if refused.Load() < 40 {
		t.Errorf("the proxy refused only %d PUTs", refused.Load())
	}
	if !sawBackoff.Load() {
		t.Error("no copy set the migration's shared backoff after SlowDown answers")
	}
	checkMigrated(t, src, b.storageOn(t, dstBucket), "src/", "dst/", sums)
}

// TestMigrateRerunRetriesFailures: a copy the destination refuses (403) is
// archived and the migration reports it; after the cause is fixed, running
// the same migration again retries exactly that copy.
func TestMigrateRerunRetriesFailures(t *testing.T) {
	t.Parallel()
	var deny atomic.Bool
	deny.Store(true)
	b := setup(t, func(c *worker.Config) {
		ts := interceptProxy(t, c.Profiles["default"].EndpointURL, func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodPut || !deny.Load() || !strings.Contains(r.URL.Path, "poison") {
				return false
			}
			writeS3Error(w, http.StatusForbidden, "AccessDenied", "Access Denied")
			return true
		})
		other := c.Profiles["other"]
		other.EndpointURL = ts.URL
		c.Profiles["other"] = other
	})
	b.start(t)
	ctx := context.Background()
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	for _, k := range []string{"src/a", "src/b", "src/poison"} {
		if _, err := src.PutBytes(ctx, k, []byte(k), nil); err != nil {
			t.Fatal(err)
		}
	}
	migrate := func() (tasks.Progress, worker.MigrateReport) {
		id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: s3loc("", b.bucket, "src/"), Dest: s3loc("other", dstBucket, "dst/")}))
		return b.wait(t, id, 2*time.Minute), migrateReport(t, b, id)
	}
	p, rep := migrate()
	if p.State != tasks.StateFailed || rep.Copied != 2 || rep.Failed != 1 || !strings.Contains(rep.Failures["src/poison"], "denied") {
		t.Fatalf("first run: %+v / %+v; want 2 copied, src/poison failed with its reason", p, rep)
	}
	deny.Store(false)
	p, rep = migrate()
	if p.State != tasks.StateCompleted || rep.Copied != 1 || rep.Skipped != 2 || rep.Failed != 0 {
		t.Fatalf("re-run after the fix: %+v / %+v; want the failed copy retried", p, rep)
	}
	if got := mustGet(t, b.storageOn(t, dstBucket), "dst/poison"); string(got) != "src/poison" {
		t.Errorf("dst/poison = %q", got)
	}
}
