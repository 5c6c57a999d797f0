package dashboard_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// TestBrowserRealUpload loads the transfers page while a real worker uploads
// a real file to a real S3 server, and watches the bar advance to 100%.
func TestBrowserRealUpload(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := browser(t)
	srv := testenv.S3(t)
	bucket := srv.Bucket(t)
	dir := t.TempDir()
	queue := testenv.UniqueName("q")
	path, _ := testenv.RandomFile(t, dir, "real.bin", 24*storage.MinPartSize)
	if err := doWithin(ctx, 30*time.Second, chromedp.Navigate(b.ts.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#live.on"))); err != nil {
		t.Fatalf("load the transfers page: %v", err)
	}
	task, err := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: tasks.Location{Bucket: bucket, Key: "real.bin"}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := b.client.Enqueue(context.Background(), task, asynq.Queue(queue))
	if err != nil {
		t.Fatal(err)
	}
	b.startWorker(t, srv, queue, worker.Config{AllowDirs: []string{dir}, PartSize: storage.MinPartSize, PartConcurrency: 1})

	row := fmt.Sprintf(`tr[data-task-id=%q] .bar`, info.ID)
	js := fmt.Sprintf(`(() => { const b = document.querySelector(%q); return b ? parseFloat(b.getAttribute("aria-valuenow")) : -1 })()`, row)
	var seen []float64
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[float64](js))
		if err != nil {
			t.Fatalf("read the bar: %v", err)
		}
		if v >= 0 && (len(seen) == 0 || v != seen[len(seen)-1]) {
			seen = append(seen, v)
		}
		if v >= 100 {
			break
		}
		if time.Now().After(deadline) {
			screenshot(t, ctx, "real-upload-timeout.png")
			t.Fatalf("the bar never reached 100%%; values seen %v", seen)
		}
	}
	t.Logf("bar values during a real 120 MiB upload: %v", seen)
	if len(seen) < 3 {
		t.Errorf("the bar did not advance in steps: %v", seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			t.Errorf("the bar went backwards: %v", seen)
		}
	}
	screenshot(t, ctx, "real-upload.png")
}
