package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// privateSetup is apiSetup on a redis-server of the test's own: the fleet
// views (throughput, workers) are of the whole Redis, so exact numbers need
// a Redis no other test writes to. With specChecked, every API exchange is
// validated against the OpenAPI document (whose security is the bearer
// token: a browser's cookie is not).
func privateSetup(t *testing.T, specChecked bool, opts ...func(*dashboard.Config)) *bundle {
	t.Helper()
	return specSetup(t, testenv.PrivateRedisClient(t), specChecked, opts...)
}

type throughputView struct {
	BucketSeconds int                     `json:"bucket_seconds"`
	WindowSeconds int                     `json:"window_seconds"`
	Points        []tasks.ThroughputPoint `json:"points"`
	TotalBytes    int64                   `json:"total_bytes"`
	AverageRate   float64                 `json:"average_rate"`
	PeakRate      float64                 `json:"peak_rate"`
}

type workersView struct {
	Workers []struct {
		ID          string         `json:"id"`
		Host        string         `json:"host"`
		PID         int            `json:"pid"`
		Concurrency int            `json:"concurrency"`
		Queues      map[string]int `json:"queues"`
		Status      string         `json:"status"`
		Active      []struct {
			TaskID   string              `json:"task_id"`
			Type     string              `json:"type"`
			Queue    string              `json:"queue"`
			Transfer *dashboard.Transfer `json:"transfer"`
		} `json:"active"`
	} `json:"workers"`
}

func getInto[T any](t *testing.T, b *bundle, path string) T {
	t.Helper()
	resp, out := b.call(t, "GET", path, viewerToken, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, out)
	}
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, out)
	}
	return v
}

// blockingServer runs a plain asynq server whose handler for typ holds each
// task until release is closed: a worker with a task in flight, as
// Inspector.Servers reports it.
func blockingServer(t *testing.T, rdb redis.UniversalClient, queue, typ string, release <-chan struct{}) {
	t.Helper()
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 3, Queues: map[string]int{queue: 1},
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Sugar(), ShutdownTimeout: time.Second})
	mux := asynq.NewServeMux()
	mux.HandleFunc(typ, func(ctx context.Context, _ *asynq.Task) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
}

// TestFleetAPI: a real worker uploads a real file to versitygw; afterwards
// GET /api/v1/throughput counts exactly its bytes (this Redis is the test's
// own), and GET /api/v1/workers lists the worker with its queues, and a
// worker holding a transfer lists that transfer with its progress. Every
// exchange is validated against the OpenAPI document.
func TestFleetAPI(t *testing.T) {
	t.Parallel()
	b := privateSetup(t, true)
	srv := testenv.S3(t)
	bucket := srv.Bucket(t)
	dir := t.TempDir()
	queue := testenv.UniqueName("q")
	path, data := testenv.RandomFile(t, dir, "fleet.bin", 3*storage.MinPartSize+12345)
	if tp := getInto[throughputView](t, b, "/api/v1/throughput"); tp.TotalBytes != 0 || len(tp.Points) != 91 || tp.BucketSeconds != 10 || tp.WindowSeconds != 900 {
		t.Fatalf("throughput before any transfer: %d bytes in %d points of %d s over %d s; want 0 in 91 points of 10 s over 900 s", tp.TotalBytes, len(tp.Points), tp.BucketSeconds, tp.WindowSeconds)
	}
	b.startWorker(t, srv, queue, worker.Config{AllowDirs: []string{dir}, Concurrency: 4, PartSize: storage.MinPartSize, PartConcurrency: 2})

	ids := map[string]int64{}
	up, err := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: tasks.Location{Bucket: bucket, Key: "fleet.bin"}}, asynq.Queue(queue))
	if err != nil {
		t.Fatal(err)
	}
	put, err := tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte("seventeen bytes!!")}, Dest: tasks.Location{Bucket: bucket, Key: "small"}}, asynq.Queue(queue))
	if err != nil {
		t.Fatal(err)
	}
	for task, size := range map[*asynq.Task]int64{up: int64(len(data)), put: 17} {
		info, err := b.client.Enqueue(context.Background(), task)
		if err != nil {
			t.Fatal(err)
		}
		ids[info.ID] = size
	}
	for id := range ids {
		eventually(t, "transfer "+id+" to complete", func() bool {
			p, err := b.client.Progress(context.Background(), id)
			return err == nil && p.State == tasks.StateCompleted
		})
	}
	tp := getInto[throughputView](t, b, "/api/v1/throughput")
	if want := int64(len(data)) + 17; tp.TotalBytes != want {
		t.Errorf("throughput total %d bytes after the transfers; want exactly %d (the upload and the put)", tp.TotalBytes, want)
	}
	var sum int64
	for _, p := range tp.Points {
		sum += p.Bytes
	}
	if sum != tp.TotalBytes || tp.PeakRate < 0 || tp.AverageRate != float64(tp.TotalBytes)/900 {
		t.Errorf("throughput: points sum %d, total %d, average %g, peak %g", sum, tp.TotalBytes, tp.AverageRate, tp.PeakRate)
	}

	// The ferry worker, and a second worker that holds a transfer.
	release := make(chan struct{})
	hold := testenv.UniqueName("hold")
	blockingServer(t, b.rdb, hold, tasks.TypeUpload, release)
	t.Cleanup(func() { close(release) })
	task, err := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: tasks.Location{Bucket: bucket, Key: "held.bin"}}, asynq.Queue(hold))
	if err != nil {
		t.Fatal(err)
	}
	info, err := b.client.Enqueue(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b.rdb, tasks.Progress{TaskID: info.ID, Type: tasks.TypeUpload, State: tasks.StateActive, BytesDone: 30, BytesTotal: 120, Dest: "s3://" + bucket + "/held.bin"})
	var ws workersView
	deadline := time.Now().Add(20 * time.Second) // servers report their tasks every 5 s
	for {
		ws = getInto[workersView](t, b, "/api/v1/workers")
		found := 0
		for _, s := range ws.Workers {
			if len(s.Active) == 1 && s.Active[0].TaskID == info.ID {
				found++
			}
		}
		if len(ws.Workers) == 2 && found == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers: %+v; want two, one running %s", ws, info.ID)
		}
		time.Sleep(200 * time.Millisecond)
	}
	host, _ := os.Hostname()
	for _, s := range ws.Workers {
		if s.Host != host || s.PID != os.Getpid() || s.Status != "active" || s.ID == "" {
			t.Errorf("worker %+v: want host %s, pid %d, active", s, host, os.Getpid())
		}
		switch {
		case s.Queues[queue] == 1:
			if s.Concurrency != 4 || len(s.Active) != 0 {
				t.Errorf("the ferry worker: concurrency %d, %d active; want 4 and idle", s.Concurrency, len(s.Active))
			}
		case s.Queues[hold] == 1:
			a := s.Active[0]
			if s.Concurrency != 3 || a.Type != tasks.TypeUpload || a.Queue != hold || a.Transfer == nil || a.Transfer.Percent != 25 {
				t.Errorf("the holding worker: concurrency %d, task %+v (transfer %+v); want 3, the upload at 25%%", s.Concurrency, a, a.Transfer)
			}
		default:
			t.Errorf("a worker of unknown queues: %+v", s)
		}
	}
}

// TestBrowserFleet: the front page draws the aggregate throughput the
// workers recorded (one point per bucket, its numbers in words) and lists
// the workers with the transfers they run, in a real chromium.
func TestBrowserFleet(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	b := privateSetup(t, false, func(c *dashboard.Config) { c.AuthToken = testToken })
	bg := context.Background()
	now := time.Now()
	// 60 MiB two minutes ago, 30 MiB a minute ago, 10 MiB 20 s ago: the
	// peak is 60 MiB over 10 s, 6 MiB/s.
	for _, r := range []struct {
		ago   time.Duration
		bytes int64
	}{{2 * time.Minute, 60 << 20}, {time.Minute, 30 << 20}, {20 * time.Second, 10 << 20}} {
		if err := tasks.RecordThroughput(bg, b.rdb, r.bytes, now.Add(-r.ago)); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	queue := testenv.UniqueName("q")
	blockingServer(t, b.rdb, queue, tasks.TypeCopy, release)
	t.Cleanup(func() { close(release) })
	task, err := tasks.NewCopyTask(tasks.CopyPayload{Source: tasks.Location{Bucket: "src", Key: "big.iso"}, Dest: tasks.Location{Bucket: "dst", Key: "big.iso"}}, asynq.Queue(queue))
	if err != nil {
		t.Fatal(err)
	}
	info, err := b.client.Enqueue(bg, task)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b.rdb, tasks.Progress{TaskID: info.ID, Type: tasks.TypeCopy, State: tasks.StateActive, BytesDone: 40 << 20, BytesTotal: 100 << 20,
		Rate: 4 << 20, Source: "s3://src/big.iso", Dest: "s3://dst/big.iso"})

	if err := doWithin(ctx, 60*time.Second,
		chromedp.Navigate(b.ts.URL+"/?token="+testToken),
		chromedp.WaitVisible(chromedp.CSS("#live.on")),
		chromedp.WaitVisible(chromedp.CSS("#tp-chart")),
	); err != nil {
		t.Fatalf("load the front page: %v", err)
	}
	type fleetView struct {
		Points  string `json:"points"`
		N       string `json:"n"`
		Total   string `json:"total"`
		Summary string `json:"summary"`
		Peak    string `json:"peak"`
		Workers []struct {
			Name  string   `json:"name"`
			Busy  string   `json:"busy"`
			Tasks []string `json:"tasks"`
		} `json:"workers"`
	}
	js := `(() => ({
		points: document.querySelector("#tp-chart .line").getAttribute("points"),
		n: document.getElementById("tp-chart").dataset.points || "",
		total: document.getElementById("tp-chart").dataset.totalBytes || "",
		summary: document.getElementById("tp-summary").textContent,
		peak: document.getElementById("tp-peak-label").textContent,
		workers: [...document.querySelectorAll("#workers tbody tr")].map(tr => ({
			name: tr.querySelector(".wname").textContent, busy: tr.querySelector(".wbusy").textContent,
			tasks: [...tr.querySelectorAll(".wt")].map(e => e.textContent)})),
	}))()`
	var v fleetView
	// The worker's heartbeat reports its task within 5 s; the page asks every 5 s.
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err = chromedp.Run(ctx, chromedp.Evaluate[fleetView](js))
		if err == nil && v.N != "" && len(v.Workers) == 1 && len(v.Workers[0].Tasks) == 1 {
			break
		}
		if time.Now().After(deadline) {
			screenshot(t, ctx, "fleet-timeout.png")
			t.Fatalf("the fleet views did not load: %+v, %v", v, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if v.N != "91" || len(strings.Fields(v.Points)) != 91 || v.Total != fmt.Sprint(100<<20) {
		t.Errorf("chart: %s points (%d drawn), total %s; want 91 points and %d bytes", v.N, len(strings.Fields(v.Points)), v.Total, 100<<20)
	}
	if !strings.Contains(v.Summary, "peak 6.0 MiB/s") || !strings.Contains(v.Summary, "100.0 MiB moved in 15 min") || v.Peak != "peak 6.0 MiB/s" {
		t.Errorf("summary %q, peak label %q; want the peak 6.0 MiB/s and 100.0 MiB moved", v.Summary, v.Peak)
	}
	host, _ := os.Hostname()
	w := v.Workers[0]
	if w.Name != fmt.Sprintf("%s:%d", host, os.Getpid()) || w.Busy != "1 / 3" ||
		!strings.HasPrefix(w.Tasks[0], info.ID+" copy 40.0% · 4.0 MiB/s → s3://dst/big.iso") {
		t.Errorf("worker row %+v; want %s:%d, 1 / 3 busy, %s copy at 40%% with its rate and dest", w, host, os.Getpid(), info.ID)
	}
	screenshot(t, ctx, "fleet.png")
}
