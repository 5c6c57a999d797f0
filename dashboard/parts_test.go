package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// partsFixture is a running upload of 12 parts as a worker leaves it in
// Redis: a checkpoint with parts 1, 2, 3 and 5 finished (1 and 2 by an
// earlier attempt, which this run found and skipped) and parts 4 and 6 in
// flight.
func partsFixture(t *testing.T, b *bundle) (string, *checkpoint.Store) {
	t.Helper()
	ctx := context.Background()
	id := testenv.UniqueName("parts")
	st := checkpoint.New(b.rdb, checkpoint.Options{TTL: time.Hour})
	if err := st.Create(ctx, id, checkpoint.Plan{UploadID: "up-1", Bucket: "media", Key: "film.mkv", PartSize: 5 << 20, PartCount: 12, TotalSize: 60 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 3, 5} {
		if err := st.RecordPart(ctx, id, "up-1", checkpoint.Part{Number: n, ETag: fmt.Sprintf(`"etag-%d"`, n), Size: 5 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, b.rdb, tasks.Progress{TaskID: id, Type: tasks.TypeUpload, State: tasks.StateActive, BytesDone: 20 << 20, BytesTotal: 60 << 20,
		PartsDone: 4, PartsTotal: 12, ResumedFrom: 10 << 20, PartsResumed: "1-2", PartsActive: "4,6", Source: "/data/film.mkv", Dest: "s3://media/film.mkv"})
	t.Cleanup(func() { _ = st.Delete(context.Background(), id, "up-1") })
	return id, st
}

type partsView struct {
	TaskID     string      `json:"task_id"`
	State      tasks.State `json:"state"`
	PartsTotal int         `json:"parts_total"`
	PartSize   int64       `json:"part_size"`
	Checkpoint bool        `json:"checkpoint"`
	Done       []int       `json:"done"`
	Resumed    []int       `json:"resumed"`
	InFlight   []int       `json:"in_flight"`
}

// TestAPIParts: GET /api/v1/transfers/{id}/parts answers the parts done
// from the checkpoint (not the first parts_done numbers), those resumed and
// those in flight from the worker's progress; a completed transfer (its
// checkpoint deleted) has every part done and none in flight; an unknown
// id is 404. Every exchange is validated against the OpenAPI document.
func TestAPIParts(t *testing.T) {
	t.Parallel()
	b := apiSetup(t)
	id, st := partsFixture(t, b)
	got := getInto[partsView](t, b, "/api/v1/transfers/"+id+"/parts")
	want := partsView{TaskID: id, State: tasks.StateActive, PartsTotal: 12, PartSize: 5 << 20, Checkpoint: true,
		Done: []int{1, 2, 3, 5}, Resumed: []int{1, 2}, InFlight: []int{4, 6}}
	if !equalParts(got, want) {
		t.Errorf("parts of the running upload: %+v; want %+v", got, want)
	}

	if err := st.Delete(context.Background(), id, "up-1"); err != nil {
		t.Fatal(err)
	}
	publish(t, b.rdb, tasks.Progress{TaskID: id, Type: tasks.TypeUpload, State: tasks.StateCompleted, BytesDone: 60 << 20, BytesTotal: 60 << 20,
		PartsDone: 12, PartsTotal: 12, ResumedFrom: 10 << 20, PartsResumed: "1-2"})
	got = getInto[partsView](t, b, "/api/v1/transfers/"+id+"/parts")
	want = partsView{TaskID: id, State: tasks.StateCompleted, PartsTotal: 12, Done: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, Resumed: []int{1, 2}, InFlight: []int{}}
	if !equalParts(got, want) {
		t.Errorf("parts of the completed upload: %+v; want %+v", got, want)
	}
	if resp, out := b.call(t, "GET", "/api/v1/transfers/nope-"+id+"/parts", viewerToken, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("parts of an unknown transfer: %d %s; want 404", resp.StatusCode, out)
	}
}

func equalParts(a, b partsView) bool {
	return a.TaskID == b.TaskID && a.State == b.State && a.PartsTotal == b.PartsTotal && a.PartSize == b.PartSize && a.Checkpoint == b.Checkpoint &&
		slices.Equal(a.Done, b.Done) && slices.Equal(a.Resumed, b.Resumed) && slices.Equal(a.InFlight, b.InFlight)
}

// TestBrowserPartsMap: the transfer page's parts map, in a real chromium,
// shows which part numbers are done (from the checkpoint: 1, 2, 3 and 5,
// not the first four), which of them an earlier attempt did, and which are
// in flight, then follows the worker as part 4 finishes and 7 starts.
func TestBrowserPartsMap(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	b := setup(t, func(c *dashboard.Config) { c.AuthToken = testToken })
	id, st := partsFixture(t, b)
	if err := doWithin(ctx, 60*time.Second,
		chromedp.Navigate(b.ts.URL+"/transfers/"+id+"?token="+testToken),
		chromedp.WaitVisible(chromedp.CSS("#live.on")),
		chromedp.WaitVisible(chromedp.CSS("#parts .part")),
	); err != nil {
		t.Fatalf("load the transfer page: %v", err)
	}
	type mapView struct {
		Cells    int    `json:"cells"`
		Done     []int  `json:"done"`
		Resumed  []int  `json:"resumed"`
		InFlight []int  `json:"inflight"`
		Note     string `json:"note"`
	}
	js := `(() => {
		const nums = sel => [...document.querySelectorAll("#parts .part" + sel)].map(c => Number(c.dataset.part));
		return {cells: document.querySelectorAll("#parts .part").length, done: nums(".done"), resumed: nums(".resumed"),
			inflight: nums(".inflight"), note: document.getElementById("parts-note").textContent};
	})()`
	var v mapView
	look := func(what string, done, resumed, inflight []int, note string) {
		t.Helper()
		eventuallyBrowser(t, ctx, what, func() bool {
			v, _ = chromedp.Run(ctx, chromedp.Evaluate[mapView](js))
			return v.Cells == 12 && slices.Equal(v.Done, done) && slices.Equal(v.Resumed, resumed) && slices.Equal(v.InFlight, inflight) && v.Note == note
		})
	}
	look("parts 1, 2, 3, 5 done, 1-2 resumed, 4 and 6 in flight", []int{1, 2, 3, 5}, []int{1, 2}, []int{4, 6},
		"4 of 12 parts done (2 resumed from an earlier attempt), 2 in flight.")
	screenshot(t, ctx, "parts.png")

	// The worker finishes part 4 and starts 7.
	if err := st.RecordPart(context.Background(), id, "up-1", checkpoint.Part{Number: 4, ETag: `"etag-4"`, Size: 5 << 20}); err != nil {
		t.Fatal(err)
	}
	publish(t, b.rdb, tasks.Progress{TaskID: id, Type: tasks.TypeUpload, State: tasks.StateActive, BytesDone: 25 << 20, BytesTotal: 60 << 20,
		PartsDone: 5, PartsTotal: 12, ResumedFrom: 10 << 20, PartsResumed: "1-2", PartsActive: "6-7", Source: "/data/film.mkv", Dest: "s3://media/film.mkv"})
	look("part 4 done, 6 and 7 in flight", []int{1, 2, 3, 4, 5}, []int{1, 2}, []int{6, 7},
		"5 of 12 parts done (2 resumed from an earlier attempt), 2 in flight.")
	screenshot(t, ctx, "parts-live.png")
}
