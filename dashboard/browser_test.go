package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// chromium finds Debian's chromium. The test installs nothing: without it,
// it skips, unless FERRY_TEST_REAL=1 (make test), which makes it a failure.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium is not installed: the browser test needs Debian's chromium package (apt-get install chromium; `make test` installs it)"
	if testenv.RealRequired() {
		t.Fatal(msg + " and " + testenv.EnvReal + "=1 forbids skipping")
	}
	t.Skip(msg)
	return ""
}

// browser starts a headless chromium with a fresh profile.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelCtx)
	// The first Run starts the browser, for as long as ctx lives: no
	// timeout on it (chromedp's rule); the test's deadlines bound the rest.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 gives a PNG
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	// ArtifactDir is a temp dir removed after the test, like TempDir, unless
	// go test runs with -artifacts (-outputdir): then it is kept.
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("save screenshot: %v", err)
		return
	}
	t.Logf("screenshot: %s", path)
}

// TestBrowser drives a real chromium: the transfers page follows a transfer
// published by a simulated worker to 100%, the detail page draws its parts
// map and sparkline, and asynqmon lists a queue. It runs behind an auth
// token, entered once with ?token= as an operator would.
func TestBrowser(t *testing.T) {
	t.Parallel()
	const token = testToken
	var apiSeen sync.Map // API paths the page requested
	b := setupWrapped(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/api/") {
				apiSeen.Store(r.URL.Path, true)
			}
			next.ServeHTTP(w, r)
		})
	}, func(c *dashboard.Config) { c.AuthToken = token })
	ctx := browser(t)

	id := testenv.UniqueName("ferry")
	const total, parts = 64 << 20, 16
	progress := func(done int64, state tasks.State) tasks.Progress {
		return tasks.Progress{
			TaskID: id, Type: tasks.TypeUpload, State: state,
			BytesDone: done, BytesTotal: total, PartsDone: int(done * parts / total), PartsTotal: parts,
			Rate: 8 << 20, Source: "/data/video.mp4", Dest: "s3://media/video.mp4",
		}
	}
	publish(t, b.rdb, progress(0, tasks.StateActive))

	row := fmt.Sprintf(`tr[data-task-id=%q]`, id)
	if err := doWithin(ctx, 30*time.Second,
		chromedp.Navigate(b.ts.URL+"/?token="+token),
		chromedp.WaitVisible(chromedp.CSS(row+" .bar")),
		chromedp.WaitVisible(chromedp.CSS("#live.on")),
	); err != nil {
		t.Fatalf("load the transfers page: %v", err)
	}

	// The simulated worker: 5% every 100 ms, then completed.
	workerDone := make(chan error, 1)
	go func() {
		for i := 1; i <= 20; i++ {
			time.Sleep(100 * time.Millisecond)
			state := tasks.StateActive
			if i == 20 {
				state = tasks.StateCompleted
			}
			if err := tasks.PublishProgress(context.Background(), b.rdb, progress(int64(total)*int64(i)/20, state), time.Minute); err != nil {
				workerDone <- err
				return
			}
		}
		workerDone <- nil
	}()

	// Sample the bar as the page shows it until it reaches 100%.
	type sample struct {
		Now   float64 `json:"now"`
		Width string  `json:"width"`
		State string  `json:"state"`
		Ratio float64 `json:"ratio"`
	}
	js := fmt.Sprintf(`(() => {
		const bar = document.querySelector(%q);
		const fill = bar.querySelector(".fill");
		return {now: parseFloat(bar.getAttribute("aria-valuenow")), width: fill.style.width,
			state: document.querySelector(%q).textContent,
			ratio: fill.getBoundingClientRect().width / bar.getBoundingClientRect().width};
	})()`, row+" .bar", row+" .state")
	var seen []float64
	var last sample
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		if last, err = chromedp.Run(ctx, chromedp.Evaluate[sample](js)); err != nil {
			t.Fatalf("read the progress bar: %v", err)
		}
		if len(seen) == 0 || last.Now != seen[len(seen)-1] {
			seen = append(seen, last.Now)
		}
		if last.Now >= 100 && last.State == "completed" {
			break
		}
		if time.Now().After(deadline) {
			screenshot(t, ctx, "transfers-timeout.png")
			t.Fatalf("the bar did not reach 100%%: values seen %v, last %+v", seen, last)
		}
		time.Sleep(30 * time.Millisecond)
	}
	if err := <-workerDone; err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			t.Errorf("the bar went backwards: %v", seen)
		}
	}
	if len(seen) < 4 {
		t.Errorf("the bar jumped instead of advancing: values seen %v", seen)
	}
	if w, err := strconv.ParseFloat(strings.TrimSuffix(last.Width, "%"), 64); err != nil || w != 100 {
		t.Errorf("final bar width %q; want 100%%", last.Width)
	}
	// Let the CSS transition finish, then check the drawn width.
	time.Sleep(400 * time.Millisecond)
	last, err := chromedp.Run(ctx, chromedp.Evaluate[sample](js))
	if err != nil {
		t.Fatal(err)
	}
	if last.Ratio < 0.99 {
		t.Errorf("the drawn fill is %.2f of the bar; want all of it", last.Ratio)
	}
	t.Logf("progress bar values seen: %v", seen)
	screenshot(t, ctx, "transfers.png")

	// The detail view of a running transfer: parts map and sparkline.
	id2 := testenv.UniqueName("ferry")
	publish(t, b.rdb, tasks.Progress{TaskID: id2, Type: tasks.TypeUpload, State: tasks.StateActive, BytesTotal: 100, PartsTotal: 10})
	if err := doWithin(ctx, 30*time.Second,
		chromedp.Navigate(b.ts.URL+"/transfers/"+id2),
		chromedp.WaitVisible(chromedp.CSS("#live.on")),
		chromedp.WaitVisible(chromedp.CSS("#parts .part")),
	); err != nil {
		t.Fatalf("load the detail page: %v", err)
	}
	for i := 1; i <= 4; i++ {
		publish(t, b.rdb, tasks.Progress{TaskID: id2, Type: tasks.TypeUpload, State: tasks.StateActive,
			BytesDone: int64(i * 10), BytesTotal: 100, PartsDone: i, PartsTotal: 10, Rate: float64(i) * 1000})
		time.Sleep(100 * time.Millisecond)
	}
	type detailView struct {
		Parts  int    `json:"parts"`
		Done   int    `json:"done"`
		Points string `json:"points"`
	}
	var detail detailView
	detailJS := `({parts: document.querySelectorAll("#parts .part").length,
		done: document.querySelectorAll("#parts .part.done").length,
		points: document.querySelector("#sparkline polyline").getAttribute("points")})`
	eventuallyBrowser(t, ctx, "the parts map to show 4 of 10 parts", func() bool {
		detail, _ = chromedp.Run(ctx, chromedp.Evaluate[detailView](detailJS))
		return detail.Parts == 10 && detail.Done == 4
	})
	if n := len(strings.Fields(detail.Points)); n < 2 {
		t.Errorf("sparkline has %d points (%q); want one per update", n, detail.Points)
	}
	screenshot(t, ctx, "detail.png")

	// asynqmon lists a queue created for this test.
	_, queue := enqueuePending(t, b.client)
	if err := doWithin(ctx, 30*time.Second, chromedp.Navigate(b.ts.URL+"/monitoring/")); err != nil {
		t.Fatalf("load asynqmon: %v", err)
	}
	eventuallyBrowser(t, ctx, "asynqmon to list queue "+queue, func() bool {
		found, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(
			`[...document.querySelectorAll("table td, table th, a")].some(e => e.textContent.trim() === %q)`, queue)))
		return found
	})
	screenshot(t, ctx, "monitoring.png")

	// The page uses the versioned API, as producers do.
	var paths []string
	apiSeen.Range(func(k, _ any) bool { paths = append(paths, k.(string)); return true })
	for _, want := range []string{"/api/v1/transfers", "/api/v1/events", "/api/v1/transfers/" + id2, "/api/v1/transfers/" + id2 + "/events"} {
		if !slices.Contains(paths, want) {
			t.Errorf("the page did not request %s; it requested %v", want, paths)
		}
	}
	for _, p := range paths {
		if !strings.HasPrefix(p, "/api/v1/") {
			t.Errorf("the page requested the unversioned %s", p)
		}
	}
}

// eventuallyBrowser retries f for up to 20 s, with a screenshot on failure.
func eventuallyBrowser(t *testing.T, ctx context.Context, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			screenshot(t, ctx, "timeout.png")
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// doWithin runs steps on the browser's tab, bounded by d.
func doWithin(ctx context.Context, d time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// TestBrowserFrontPage drives the front page's counts and filters in a real
// chromium. The dashboard runs on a redis-server of its own, so the counts
// it shows are of this test's transfers only: they must match what the test
// published, follow a live update, and the filters by state, type and queue
// (asynq's, asked through /api/v1) must narrow the table to the right rows.
func TestBrowserFrontPage(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	rdb := testenv.PrivateRedisClient(t)
	const token = testToken
	srv, err := dashboard.New(dashboard.Config{Redis: rdb, AuthToken: token, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	t.Cleanup(func() { _ = srv.Close() })

	// Six transfers in two asynq queues; the progress says their state.
	client := tasks.NewClient(rdb)
	qa, qb := testenv.UniqueName("qa"), testenv.UniqueName("qb")
	type transfer struct {
		queue, typ string
		state      tasks.State
		age        time.Duration // since the last update
	}
	ts6 := map[string]transfer{
		"t1": {qa, tasks.TypeUpload, tasks.StateActive, 0},
		"t2": {qa, tasks.TypeCopy, tasks.StateActive, 0},
		"t3": {qb, tasks.TypeUpload, tasks.StateRetrying, 0},
		"t4": {qb, tasks.TypeDelete, tasks.StateFailed, time.Minute},
		"t5": {qb, tasks.TypeUpload, tasks.StateFailed, 2 * time.Hour}, // failed, but not in the last hour
		"t6": {qa, tasks.TypeUpload, tasks.StateCompleted, 0},
	}
	ids := map[string]string{} // name -> task id
	names := map[string]string{}
	for name, tr := range ts6 {
		task, err := tasks.NewPutTask(tasks.PutPayload{
			Source: tasks.Location{Data: []byte("hello")},
			Dest:   tasks.Location{Bucket: "bucket-dash", Key: testenv.UniqueName("k")},
		}, asynq.Queue(tr.queue))
		if err != nil {
			t.Fatal(err)
		}
		info, err := client.Enqueue(context.Background(), task)
		if err != nil {
			t.Fatal(err)
		}
		ids[name], names[info.ID] = info.ID, name
		publish(t, rdb, tasks.Progress{TaskID: info.ID, Type: tr.typ, State: tr.state,
			BytesDone: 10, BytesTotal: 100, UpdatedAt: time.Now().Add(-tr.age),
			Source: "/data/" + name, Dest: "s3://bucket-dash/" + name})
	}

	type view struct {
		Counts map[string]string `json:"counts"`
		Rows   []string          `json:"rows"`
		Types  []string          `json:"types"`
		Note   string            `json:"note"`
	}
	viewJS := `(() => ({
		counts: Object.fromEntries([...document.querySelectorAll("#summary [data-count]")].map(b => [b.dataset.count, b.querySelector(".n").textContent])),
		rows: [...document.querySelectorAll("#transfers tbody tr")].map(tr => tr.dataset.taskId),
		types: [...document.querySelectorAll("#f-type option")].map(o => o.value),
		note: document.getElementById("filter-note").textContent,
	}))()`
	var v view
	rowNames := func() string {
		var out []string
		for _, id := range v.Rows {
			out = append(out, names[id])
		}
		slices.Sort(out)
		return strings.Join(out, ",")
	}
	waitView := func(what string, ok func() bool) {
		t.Helper()
		eventuallyBrowser(t, ctx, what, func() bool {
			var err error
			v, err = chromedp.Run(ctx, chromedp.Evaluate[view](viewJS))
			return err == nil && ok()
		})
	}
	counts := func(active, retrying, failed string) func() bool {
		return func() bool {
			return v.Counts["active"] == active && v.Counts["retrying"] == retrying && v.Counts["failed-1h"] == failed
		}
	}
	// set changes a filter as a user does: the value, then its event.
	set := func(sel, value, event string) {
		t.Helper()
		js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q; e.dispatchEvent(new Event(%q)); return e.value; })()`, sel, value, event)
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil || got != value {
			t.Fatalf("set %s to %q: got %q, %v", sel, value, got, err)
		}
	}

	if err := doWithin(ctx, 60*time.Second,
		chromedp.Navigate(ts.URL+"/?token="+token),
		chromedp.WaitVisible(chromedp.CSS("#live.on")),
		chromedp.WaitVisible(chromedp.CSS("#summary")),
	); err != nil {
		t.Fatalf("load the transfers page: %v", err)
	}
	waitView("all six rows and the counts 2 active, 1 retrying, 1 failed in the last hour",
		func() bool { return len(v.Rows) == 6 && counts("2", "1", "1")() })
	if want := []string{"", tasks.TypeCopy, tasks.TypeDelete, tasks.TypeUpload}; !slices.Equal(v.Types, want) {
		t.Errorf("type filter offers %q; want %q", v.Types, want)
	}

	// A live update moves a transfer from retrying to active.
	publish(t, rdb, tasks.Progress{TaskID: ids["t3"], Type: tasks.TypeUpload, State: tasks.StateActive, BytesDone: 20, BytesTotal: 100})
	waitView("the counts to follow t3 from retrying to active", counts("3", "0", "1"))

	// State: the failed button filters by state failed (both failures).
	if err := doWithin(ctx, 30*time.Second, chromedp.Click(chromedp.CSS(`#summary [data-count="failed-1h"]`))); err != nil {
		t.Fatalf("click the failed count: %v", err)
	}
	waitView("the failed filter to show t4 and t5", func() bool { return rowNames() == "t4,t5" })
	screenshot(t, ctx, "front-failed.png")
	set("#f-state", "", "change")

	// Type.
	set("#f-type", tasks.TypeUpload, "change")
	waitView("the upload filter to show t1, t3, t5, t6", func() bool { return rowNames() == "t1,t3,t5,t6" })

	// Queue, with the type filter still on, then alone. The counts stay
	// those of every transfer.
	set("#f-queue", qb, "input")
	waitView("queue "+qb+" and type upload to show t3, t5", func() bool { return rowNames() == "t3,t5" })
	set("#f-type", "", "change")
	waitView("queue "+qb+" to show t3, t4, t5", func() bool { return rowNames() == "t3,t4,t5" })
	set("#f-queue", qa, "input")
	waitView("queue "+qa+" to show t1, t2, t6", func() bool { return rowNames() == "t1,t2,t6" && counts("3", "0", "1")() })
	if v.Note != "" {
		t.Errorf("filter note %q; want none", v.Note)
	}
	screenshot(t, ctx, "front-queue.png")

	// A queue with none of them: the table says so.
	set("#f-queue", "no-such-queue", "input")
	waitView("an unknown queue to empty the table", func() bool { return len(v.Rows) == 0 })
	var noMatch bool
	if noMatch, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`!document.getElementById("no-match").hidden`)); err != nil || !noMatch {
		t.Errorf("no 'no transfer matches' note under an empty filter (%v)", err)
	}
	set("#f-queue", "", "input")
	waitView("clearing the filters to show all six", func() bool { return len(v.Rows) == 6 })
	screenshot(t, ctx, "front.png")

	// A finished transfer's page says its average rate: 80 MiB moved this
	// run (100 done, 20 resumed) in 10 s, instead of an empty chart.
	done := testenv.UniqueName("done")
	end := time.Now()
	publish(t, rdb, tasks.Progress{TaskID: done, Type: tasks.TypeUpload, State: tasks.StateCompleted,
		BytesDone: 100 << 20, BytesTotal: 100 << 20, ResumedFrom: 20 << 20, PartsDone: 10, PartsTotal: 10,
		StartedAt: end.Add(-10 * time.Second), UpdatedAt: end})
	if err := doWithin(ctx, 60*time.Second, chromedp.Navigate(ts.URL+"/transfers/"+done)); err != nil {
		t.Fatalf("load the finished transfer's page: %v", err)
	}
	type finished struct {
		Rate       string `json:"rate"`
		Note       string `json:"note"`
		ChartShown bool   `json:"chart"`
	}
	var fin finished
	eventuallyBrowser(t, ctx, "the finished transfer's average rate", func() bool {
		fin, _ = chromedp.Run(ctx, chromedp.Evaluate[finished](`({rate: document.querySelector('[data-field="rate"]').textContent,
			note: document.getElementById("spark-note").textContent, chart: getComputedStyle(document.getElementById("sparkline")).display !== "none"})`))
		return fin.Rate != ""
	})
	if fin.Rate != "8.0 MiB/s average" || !strings.Contains(fin.Note, "Average 8.0 MiB/s over 10s") || fin.ChartShown {
		t.Errorf("finished transfer shows rate %q, note %q, chart shown %v; want 8.0 MiB/s average, its note, no empty chart", fin.Rate, fin.Note, fin.ChartShown)
	}
	screenshot(t, ctx, "finished.png")
}
