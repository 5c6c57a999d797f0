package clustertest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/faulttest"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/internal/workerproc"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// TestWorkerKillOnCluster SIGKILLs the worker process that runs an upload
// on a real Redis Cluster. The other worker process takes it over from its
// checkpoint — the ownership, its fencing token, the takeover index and the
// done mark all live on the cluster — records the next part within 15 s of
// the kill, and completes the upload with the right bytes; no multipart
// upload is left.
func TestWorkerKillOnCluster(t *testing.T) {
	requireCluster(t)
	c := sharedCluster(t)
	srv := testenv.S3(t)
	bucket := srv.Bucket(t)
	// 300 ms per part: the upload lasts long enough to be killed inside.
	px, err := faulttest.NewProxy(srv.Endpoint, faulttest.Faults{Latency: 300 * time.Millisecond,
		Match: func(r *http.Request) bool { return r.URL.Query().Has("partNumber") }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	prof := srv.Profile()
	prof.EndpointURL = px.URL
	queue, dir, logDir := testenv.UniqueName("kill"), t.TempDir(), t.TempDir()
	cc := workerproc.ChildConfig{RedisCluster: c.Addrs(), Profiles: map[string]storage.Config{"default": prof}, Queue: queue,
		Dir: dir, Concurrency: 2, PartSize: storage.MinPartSize, PartConcurrency: 1, Shutdown: 5 * time.Second, Debug: true}
	workers := []*workerproc.Child{
		workerproc.StartChild(t, "", logDir, "worker-a", cc),
		workerproc.StartChild(t, "", logDir, "worker-b", cc),
	}
	rdb := c.Client()
	t.Cleanup(func() { _ = rdb.Close() })
	client := tasks.NewClient(rdb)
	ctx := context.Background()

	path, data := testenv.RandomFile(t, dir, "big.bin", 12*storage.MinPartSize+777)
	task, err := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: loc(bucket, "killed/big.bin")})
	if err != nil {
		t.Fatal(err)
	}
	info, err := client.Enqueue(ctx, task, asynq.Queue(queue))
	if err != nil {
		t.Fatal(err)
	}
	id := info.ID
	progress := func() tasks.Progress {
		p, _ := client.Progress(ctx, id)
		return p
	}
	deadline := time.Now().Add(2 * time.Minute)
	for progress().PartsDone < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the upload never reached 3 parts: %+v", progress())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var victim, survivor *workerproc.Child
	for i, w := range workers {
		if wrote(t, w.Log, id) {
			victim, survivor = w, workers[1-i]
		}
	}
	if victim == nil {
		t.Fatal("no worker log shows a part of the upload")
	}
	killed := time.Now()
	victim.Kill()
	base := progress().PartsDone
	if ck, err := checkpoint.New(rdb, checkpoint.Options{}).Load(ctx, id); err == nil {
		base = max(base, len(ck.Parts))
	}
	t.Logf("SIGKILL %s after %d parts of %d", victim.Name, base, (len(data)+storage.MinPartSize-1)/storage.MinPartSize)

	// Resumed: the first progress written after the kill with a part more.
	var resumed time.Duration
	deadline = time.Now().Add(2 * time.Minute)
	for {
		p := progress()
		if p.UpdatedAt.After(killed) && (p.PartsDone > base || p.State == tasks.StateCompleted) && resumed == 0 {
			resumed = p.UpdatedAt.Sub(killed)
		}
		if p.State.Terminal() {
			if p.State != tasks.StateCompleted {
				t.Fatalf("upload ended %s: %s", p.State, p.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload did not complete after the kill: %+v", p)
		}
		time.Sleep(50 * time.Millisecond)
	}
	sc := srv.Client()
	out, err := sc.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String("killed/big.bin")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("object after the takeover: %d bytes (%v), want the file's %d", len(got), err, len(data))
	}
	ups, err := sc.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) > 0 {
		t.Errorf("%d multipart uploads left", len(ups.Uploads))
	}
	if !wrote(t, survivor.Log, id) {
		t.Errorf("%s's log shows no part of the upload: who finished it?", survivor.Name)
	}
	if survivor.Exited() {
		t.Errorf("%s exited", survivor.Name)
	}
	t.Logf("FIGURES cluster-worker-kill: resumed_after=%.1fs completed_after=%.1fs", resumed.Seconds(), time.Since(killed).Seconds())
	if resumed > 15*time.Second {
		t.Errorf("the next part came %s after the kill, want ≤ 15 s", resumed.Round(100*time.Millisecond))
	}
}

// wrote reports whether the worker log at path shows a part of task id.
func wrote(t *testing.T, path, id string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"part uploaded"`) && strings.Contains(l, id) {
			return true
		}
	}
	return false
}
