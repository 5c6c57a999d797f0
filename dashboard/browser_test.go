package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

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
	b := setup(t, func(c *dashboard.Config) { c.AuthToken = token })
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
