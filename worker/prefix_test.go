package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// keysOf lists every key of s, in order.
func keysOf(t *testing.T, s *storage.S3) []string {
	t.Helper()
	var keys []string
	for f, err := range s.List(context.Background(), "", 0) {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, f.Key)
	}
	return keys
}

func putAll(t *testing.T, s *storage.S3, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, err := s.PutBytes(context.Background(), k, []byte(k), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeletePrefixIsDirectory: a recursive delete enqueued by a Go
// producer with the prefix "logs/2024" deletes logs/2024/... only; its dry
// run lists the same and deletes nothing; "logs/2024*" is the raw prefix.
func TestDeletePrefixIsDirectory(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	s := b.storage(t)
	putAll(t, s, "logs/2024/01.log", "logs/2024/02/03.log", "logs/2024-old/01.log", "logs/2024.txt", "logs/2025/01.log")
	del := func(p tasks.DeletePayload) map[string]any {
		t.Helper()
		p.Dest.Bucket, p.Recursive = b.bucket, true
		id := b.enq(t)(tasks.NewDeleteTask(p))
		if st := b.wait(t, id, time.Minute); st.State != tasks.StateCompleted {
			t.Fatalf("delete %q: %s (%s)", p.Dest.Key, st.State, st.Error)
		}
		var res map[string]any
		if err := json.Unmarshal(b.info(t, id).Result, &res); err != nil {
			t.Fatal(err)
		}
		return res
	}

	res := del(tasks.DeletePayload{Dest: tasks.Location{Key: "logs/2024"}, DryRun: true})
	if fmt.Sprint(res["delete_sample"]) != "[logs/2024/01.log logs/2024/02/03.log]" || res["would_delete"] != float64(2) {
		t.Errorf("dry run result = %v, want the two keys under logs/2024/", res)
	}
	if n := len(keysOf(t, s)); n != 5 {
		t.Errorf("the dry run deleted %d objects", 5-n)
	}

	del(tasks.DeletePayload{Dest: tasks.Location{Key: "logs/2024"}})
	if got, want := keysOf(t, s), []string{"logs/2024-old/01.log", "logs/2024.txt", "logs/2025/01.log"}; !slices.Equal(got, want) {
		t.Errorf("after deleting logs/2024: %v, want %v", got, want)
	}

	del(tasks.DeletePayload{Dest: tasks.Location{Key: "logs/2024*"}})
	if got, want := keysOf(t, s), []string{"logs/2025/01.log"}; !slices.Equal(got, want) {
		t.Errorf("after deleting logs/2024*: %v, want %v", got, want)
	}
}

// TestMigrateDeleteExtraKeepsNewObjects: a migration of "photos" with
// --delete-extra copies photos/ only and deletes only extras under
// photos/ that existed before it started: an object written at the
// destination while it runs is kept (and counted), and photos-2019/ and
// photos.bak are never touched.
func TestMigrateDeleteExtraKeepsNewObjects(t *testing.T) {
	t.Parallel()
	// One task at a time: the migration holds the only slot, so its copy
	// waits until a second worker starts; meanwhile the test writes.
	b := setup(t, func(c *worker.Config) { c.Concurrency = 1 })
	b.start(t)
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	dst := b.storageOn(t, dstBucket)
	putAll(t, src, "photos/1.jpg", "photos-2019/src.jpg", "photos.txt")
	putAll(t, dst, "photos/old-extra.jpg", "photos-2019/x.jpg", "photos.bak")
	// Extras older than the migration by more than the allowed skew.
	time.Sleep(testenv.ExtrasSettle)

	id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: s3loc("", b.bucket, "photos"),
		Dest: s3loc("", dstBucket, "photos"), DeleteExtra: true}))
	deadline := time.Now().Add(time.Minute)
	for {
		pending, err := b.client.Inspector().ListPendingTasks(b.queue)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) > 0 {
			break // the migration started and enqueued its copy
		}
		if time.Now().After(deadline) {
			t.Fatal("the migration enqueued no copy within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	putAll(t, dst, "photos/written-during.jpg")
	b.start(t) // a second worker runs the copy
	if st := b.wait(t, id, 2*time.Minute); st.State != tasks.StateCompleted {
		t.Fatalf("migration: %s (%s)", st.State, st.Error)
	}
	rep := migrateReport(t, b, id)
	if rep.Copied != 1 || rep.Deleted != 1 || rep.KeptRecent != 1 || rep.DeleteSkipped != "" {
		t.Errorf("report = %+v, want 1 copied, 1 deleted, 1 kept as recent", rep)
	}
	want := []string{"photos-2019/x.jpg", "photos.bak", "photos/1.jpg", "photos/written-during.jpg"}
	if got := keysOf(t, dst); !slices.Equal(got, want) {
		t.Errorf("destination holds %v, want %v", got, want)
	}
}

// TestMigrateDeleteExtraKeepsARewrite: an extra rewritten at the destination
// between the listings that found it and its deletion is the writer's new
// object, not the extra listed: it is kept (and counted in kept_changed).
// The other extra, unchanged, is deleted.
func TestMigrateDeleteExtraKeepsARewrite(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	w := b.start(t)
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	dst := b.storageOn(t, dstBucket)
	putAll(t, src, "photos/1.jpg")
	putAll(t, dst, "photos/extra.jpg", "photos/rewritten.jpg")
	time.Sleep(testenv.ExtrasSettle)
	worker.BeforeExtrasDelete(w, func() {
		if _, err := dst.PutBytes(context.Background(), "photos/rewritten.jpg", []byte("written by someone else"), nil); err != nil {
			t.Error(err)
		}
	})
	prog, rep := migrateRun(t, b, dstBucket, tasks.MigratePayload{Source: tasks.Location{Key: "photos"}, Dest: tasks.Location{Key: "photos"}, DeleteExtra: true})
	if prog.State != tasks.StateCompleted {
		t.Fatalf("migration: %s (%s)", prog.State, prog.Error)
	}
	got, err := dst.GetBytes(context.Background(), "photos/rewritten.jpg")
	if err != nil || string(got) != "written by someone else" {
		t.Errorf("the object rewritten during --delete-extra: %q, %v; want it kept", got, err)
	}
	if rep.Deleted != 1 || rep.KeptChanged != 1 {
		t.Errorf("report %+v; want 1 deleted, 1 kept as changed", rep)
	}
	if want := []string{"photos/1.jpg", "photos/rewritten.jpg"}; !slices.Equal(keysOf(t, dst), want) {
		t.Errorf("destination holds %v, want %v", keysOf(t, dst), want)
	}
}
