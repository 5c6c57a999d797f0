package dashboard_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

type reportView struct {
	TaskID string               `json:"task_id"`
	State  tasks.State          `json:"state"`
	Queue  string               `json:"queue"`
	Report *tasks.MigrateReport `json:"report"`
	Rerun  string               `json:"rerun"`
}

// TestMigrationPage: a real worker migrates three objects on versitygw, one
// of which the destination cannot take (its key is 1,027 bytes there).
// GET /api/v1/transfers/{id}/report answers the report (the failed key and
// its reason) and the command that re-runs the migration; the transfer
// page, in a real chromium, says the objects listed, copied, skipped and
// failed, the bytes, lists the failure with its reason and shows the
// re-run command. A running migration's page says its rates and ETA.
func TestMigrationPage(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	b := apiSetup(t)
	page, err := dashboard.New(dashboard.Config{Redis: b.rdb, AuthToken: testToken, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pts := httptest.NewServer(page)
	t.Cleanup(pts.Close)
	t.Cleanup(func() { _ = page.Close() })

	srv := testenv.S3(t)
	bucket := srv.Bucket(t)
	queue := testenv.UniqueName("q")
	long := testenv.LongKey("mig/")
	for _, k := range []string{long, "mig/a", "mig/b"} {
		srv.PutObject(t, bucket, k, []byte("data"), nil)
	}
	b.startWorker(t, srv, queue, worker.Config{Logger: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))})
	const dstPrefix = testenv.LongKeyDest
	task, err := tasks.NewMigrateTask(tasks.MigratePayload{Source: tasks.Location{Bucket: bucket, Key: "mig/"}, Dest: tasks.Location{Bucket: bucket, Key: dstPrefix}}, asynq.Queue(queue))
	if err != nil {
		t.Fatal(err)
	}
	info, err := b.client.Enqueue(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	id := info.ID
	eventually(t, "the migration to end", func() bool {
		p, err := b.client.Progress(context.Background(), id)
		return err == nil && p.State.Terminal()
	})
	var rv reportView
	eventually(t, "the migration's report", func() bool {
		rv = getInto[reportView](t, b, "/api/v1/transfers/"+id+"/report")
		return rv.Report != nil
	})
	rep := rv.Report
	wantRerun := "ferry migrate s3://" + bucket + "/mig/ s3://" + bucket + "/" + dstPrefix + " --queue " + queue
	if rv.State != tasks.StateFailed || rv.Queue != queue || rep.Listed != 3 || rep.Copied != 2 || rep.Failed != 1 || !strings.Contains(rep.Failures[long], "1024") || rv.Rerun != wantRerun {
		t.Fatalf("report %+v (%+v); want failed with 3 listed, 2 copied, the long key failed (1024), re-run %q", rv, rep, wantRerun)
	}
	put, _ := enqueuePending(t, b.client)
	if resp, out := b.call(t, "GET", "/api/v1/transfers/"+put+"/report", viewerToken, nil); resp.StatusCode != http.StatusConflict || !strings.Contains(out, "only a migration has a report") {
		t.Errorf("report of a put: %d %s; want 409", resp.StatusCode, out)
	}

	if err := doWithin(ctx, 60*time.Second,
		chromedp.Navigate(pts.URL+"/transfers/"+id+"?token="+testToken),
		chromedp.WaitVisible(chromedp.CSS("#migration")),
		chromedp.WaitVisible(chromedp.CSS("#mig-rerun")),
	); err != nil {
		screenshot(t, ctx, "migration-timeout.png")
		t.Fatalf("load the migration's page: %v", err)
	}
	type migView struct {
		Objects  string     `json:"objects"`
		Bytes    string     `json:"bytes"`
		Rate     string     `json:"rate"`
		ETA      string     `json:"eta"`
		Failures [][]string `json:"failures"`
		Note     string     `json:"note"`
		Rerun    string     `json:"rerun"`
	}
	js := `(() => ({
		objects: document.querySelector('[data-mig="objects"]').textContent,
		bytes: document.querySelector('[data-mig="bytes"]').textContent,
		rate: document.querySelector('[data-mig="rate"]').textContent,
		eta: document.querySelector('[data-mig="eta"]').textContent,
		failures: [...document.querySelectorAll("#mig-failures tbody tr")].map(tr => [...tr.children].map(td => td.textContent)),
		note: document.getElementById("mig-failures-note").textContent,
		rerun: document.getElementById("mig-rerun-cmd").textContent,
	}))()`
	var v migView
	eventuallyBrowser(t, ctx, "the migration's counts, failure and re-run command", func() bool {
		v, _ = chromedp.Run(ctx, chromedp.Evaluate[migView](js))
		return v.Rerun != "" && len(v.Failures) == 1
	})
	if v.Objects != "3 listed · 2 copied · 0 skipped · 1 failed" || v.Bytes != "8 B" || v.ETA != "—" ||
		v.Failures[0][0] != long || !strings.Contains(v.Failures[0][1], "1024") || v.Rerun != wantRerun ||
		!strings.HasPrefix(v.Note, "1 objects failed, from the migration's report") {
		t.Errorf("the migration's page: %+v", v)
	}
	screenshot(t, ctx, "migration.png")

	// A running migration, as its worker publishes it: 50 objects decided
	// in 10 s of this run (10 more by an earlier run), 40 left.
	live := testenv.UniqueName("mig")
	now := time.Now()
	publish(t, b.rdb, tasks.Progress{TaskID: live, Type: tasks.TypeMigrate, State: tasks.StateActive, Rate: 4 << 20, BytesDone: 40 << 20,
		StartedAt: now.Add(-10 * time.Second), UpdatedAt: now, Source: "s3://old/", Dest: "s3://new/",
		Counters:        map[string]int64{"listed": 100, "copied": 45, "skipped": 15, "pending": 8, "bytes": 40 << 20, "listing_done": 1},
		ResumedCounters: map[string]int64{"listed": 30, "copied": 10}})
	if err := doWithin(ctx, 60*time.Second,
		chromedp.Navigate(pts.URL+"/transfers/"+live),
		chromedp.WaitVisible(chromedp.CSS("#migration")),
	); err != nil {
		t.Fatalf("load the running migration's page: %v", err)
	}
	eventuallyBrowser(t, ctx, "the running migration's rates and ETA", func() bool {
		v, _ = chromedp.Run(ctx, chromedp.Evaluate[migView](js))
		return v.Objects != ""
	})
	if v.Objects != "100 listed · 45 copied · 15 skipped · 0 failed · 8 in flight" || v.Bytes != "40.0 MiB" ||
		v.Rate != "4.0 MiB/s · 5.0 objects/s" || v.ETA != "8s" {
		t.Errorf("the running migration's page: %+v; want its counts, 4.0 MiB/s · 5.0 objects/s, ETA 8s (40 left at 5/s)", v)
	}
	screenshot(t, ctx, "migration-live.png")
}
