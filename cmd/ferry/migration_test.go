package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// putLongKey puts testenv.LongKey(prefix) with "too long there": the key a
// migration from prefix to testenv.LongKeyDest cannot write. It returns the
// key and that migration's SRC and DST.
func (b bundle) putLongKey(t *testing.T, prefix string) (long, src, dst string) {
	t.Helper()
	long = testenv.LongKey(prefix)
	b.putObject(t, long, []byte("too long there"))
	return long, b.url(prefix), b.url(testenv.LongKeyDest)
}

// TestMigrationStatusWatchRerun: a migration in which one key cannot be
// written at the destination (1,006 bytes at the source, 1,027 under the
// destination prefix). `ferry status` says its objects listed, copied,
// skipped and failed and its bytes, lists the failed key with its reason
// from the report, and prints the command that re-runs it; `ferry watch`
// prints its counts. Pasted as printed, the re-run retries only what failed
// or changed: the changed object is copied again, the unchanged one is not
// written (its destination keeps its LastModified), the long key fails
// again with its reason.
func TestMigrationStatusWatchRerun(t *testing.T) {
	t.Parallel()
	b := setupWorker(t)
	long, src, dst := b.putLongKey(t, "mig/")
	b.putObject(t, "mig/same", []byte("unchanged"))
	b.putObject(t, "mig/changes", []byte("first version"))

	r := b.ferry(t, "migrate", src, dst, "--queue", b.queue, "--json")
	var enq struct {
		TaskID string `json:"task_id"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &enq); err != nil || enq.TaskID == "" {
		t.Fatalf("migrate --json: %v: %s", err, r)
	}
	// watch follows it to its end: one line per change, with its counts.
	w := b.ferry(t, "watch", enq.TaskID)
	if w.Code != exitPartial {
		t.Fatalf("watch: exit %d, want %d (partial): %s", w.Code, exitPartial, w)
	}
	lines := strings.Split(strings.TrimSpace(w.Stdout), "\n")
	last := lines[len(lines)-1]
	if want := enq.TaskID + " failed 3 listed · 2 copied · 0 skipped · 1 failed · "; !strings.HasPrefix(last, want) || !strings.Contains(last, "objects failed") {
		t.Errorf("watch's last line:\n%s\nwant it to start %q and say why it failed", last, want)
	}

	st := b.ferry(t, "status", enq.TaskID)
	if st.Code != 0 {
		t.Fatalf("status: %s", st)
	}
	for _, want := range []string{
		"Objects:   3 listed · 2 copied · 0 skipped · 1 failed\n",
		"Progress:  22 B copied\n",
		"Failures (1, from the migration's report):\n",
		"  " + long + ": ",
		"1024",
		"Re-run: ferry migrate " + src + " " + dst + " --queue " + b.queue + "\n",
		"it copies only what failed or changed since",
	} {
		if !strings.Contains(st.Stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, st.Stdout)
		}
	}
	var sj struct {
		Rerun  string `json:"rerun"`
		Result tasks.MigrateReport
	}
	if err := json.Unmarshal([]byte(b.must(t, "status", enq.TaskID, "--json").Stdout), &sj); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sj.Rerun, "ferry migrate ") || sj.Result.Failed != 1 || !strings.Contains(sj.Result.Failures[long], "1024") {
		t.Errorf("status --json: rerun %q, report %+v", sj.Rerun, sj.Result)
	}

	sameBefore := b.lastModified(t, "a/much/longer/destination/same")
	time.Sleep(1100 * time.Millisecond) // LastModified has whole seconds
	b.putObject(t, "mig/changes", []byte("second version"))
	// The re-run, pasted as printed (no shell quoting needed here: check).
	m := regexp.MustCompile(`(?m)^Re-run:\s+(.*)$`).FindStringSubmatch(st.Stdout)
	if m == nil || strings.ContainsAny(m[1], `'"\`) {
		t.Fatalf("no re-run line to paste: %q", m)
	}
	argv := append(strings.Fields(m[1])[1:], "--wait", "--json")
	again := b.ferry(t, argv...)
	if again.Code != exitPartial {
		t.Fatalf("re-run: exit %d, want %d: %s", again.Code, exitPartial, again)
	}
	outs := strings.Split(strings.TrimSpace(again.Stdout), "\n")
	var final struct{ Result tasks.MigrateReport }
	if err := json.Unmarshal([]byte(outs[len(outs)-1]), &final); err != nil {
		t.Fatalf("re-run final status: %v: %s", err, again)
	}
	rep := final.Result
	if rep.Listed != 3 || rep.Copied != 1 || rep.Skipped != 1 || rep.Failed != 1 || rep.Bytes != int64(len("second version")) || !strings.Contains(rep.Failures[long], "1024") {
		t.Errorf("re-run report %+v; want 3 listed, the changed object copied, the unchanged one skipped, the long key failed again", rep)
	}
	if got := b.getObject(t, "a/much/longer/destination/changes"); string(got) != "second version" {
		t.Errorf("the changed object at the destination: %q", got)
	}
	if after := b.lastModified(t, "a/much/longer/destination/same"); !after.Equal(sameBefore) {
		t.Errorf("the unchanged object was written again: LastModified %s, was %s", after, sameBefore)
	}
}

func (b bundle) lastModified(t *testing.T, key string) time.Time {
	t.Helper()
	out, err := b.s3.Client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: &b.bucket, Key: &key})
	if err != nil {
		t.Fatalf("head %s: %v", key, err)
	}
	return *out.LastModified
}

// TestMigrationLines: a running migration's line and bar text say its
// counts, bytes, byte and object rates, and its ETA once the source is
// listed to its end ("listing…" and "ETA once listed" before).
func TestMigrationLines(t *testing.T) {
	t.Parallel()
	now := time.Now()
	p := tasks.Progress{TaskID: "m1", Type: tasks.TypeMigrate, State: tasks.StateActive, Rate: 4 << 20,
		StartedAt: now.Add(-10 * time.Second), UpdatedAt: now,
		Counters: map[string]int64{"listed": 100, "copied": 40, "skipped": 10, "failed": 2, "pending": 5, "bytes": 40 << 20},
		// 12 of them were decided by an earlier run: 40 in this run's 10 s.
		ResumedCounters: map[string]int64{"listed": 20, "copied": 10, "skipped": 2}}
	want := "100 listed · 40 copied · 10 skipped · 2 failed · 5 in flight · listing… · 40.0 MiB · 4.0 MiB/s · 4.0 objects/s · ETA once listed"
	if got := barStats(p); got != want {
		t.Errorf("while listing:\n got %s\nwant %s", got, want)
	}
	p.Counters["listing_done"] = 1
	// 48 objects left at 4 per second.
	want = "100 listed · 40 copied · 10 skipped · 2 failed · 5 in flight · 40.0 MiB · 4.0 MiB/s · 4.0 objects/s · ETA 12s"
	if got := barStats(p); got != want {
		t.Errorf("listed:\n got %s\nwant %s", got, want)
	}
	if got, want := progressLine(p), "m1 active "+want; got != want {
		t.Errorf("line:\n got %s\nwant %s", got, want)
	}
	p.State, p.Error = tasks.StateFailed, "migration finished with 2 objects failed"
	if got := progressLine(p); !strings.HasSuffix(got, fmt.Sprintf("40.0 MiB: %s", p.Error)) || strings.Contains(got, "ETA") {
		t.Errorf("failed line: %s", got)
	}
}
