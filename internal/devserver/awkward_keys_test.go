package devserver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ferryhq/ferry/internal/devserver"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
)

// TestAwkwardKeys: issue 17's table of keys (testenv.AwkwardKeys) on the
// S3 server of `ferry dev`, through ferry's storage: put, multipart put,
// server-side copy, move, list, info, a presigned GET and delete. `ferry dev`
// is where a new user first tries ferry; a key that works on S3 works there.
func TestAwkwardKeys(t *testing.T) {
	t.Parallel()
	srv, err := devserver.StartS3("127.0.0.1:0", devserver.S3Options{Dir: t.TempDir(), Buckets: []string{"put", "copy", "move"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close(context.Background()) })
	ts := &testenv.S3Server{Endpoint: srv.Endpoint(), AccessKey: "k", SecretKey: "s", Region: "us-east-1"}
	ctx := context.Background()
	client, err := storage.NewClient(ctx, ts.Profile())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	put, _ := client.Bucket("put")
	cp, _ := client.Bucket("copy")
	mv, _ := client.Bucket("move")

	want := map[string][]byte{}
	var keys []string
	for i, k := range testenv.AwkwardKeys() {
		keys = append(keys, k.Key)
		want[k.Key] = fmt.Appendf(nil, "#%d %s %q\n", i, k.Name, k.Key)
		var err error
		if i%2 == 0 {
			_, err = put.PutBytes(ctx, k.Key, want[k.Key], nil)
		} else {
			// Multipart, in one part.
			_, err = put.PutLarge(ctx, k.Key, bytes.NewReader(want[k.Key]), &storage.LargeOptions{PartSize: storage.MinPartSize})
		}
		if err != nil {
			t.Fatalf("put %q: %v", k.Key, err)
		}
	}
	ts.CheckBucket(t, "put", "put", want)

	for _, k := range keys {
		if _, err := cp.CopyFrom(ctx, put, k, k, nil); err != nil {
			t.Errorf("copy %q: %v", k, err)
		}
		if _, err := mv.MoveFrom(ctx, cp, k, k, nil); err != nil {
			t.Errorf("move %q: %v", k, err)
		}
	}
	ts.CheckBucket(t, "copy and move", "move", want)
	ts.CheckBucket(t, "move source", "copy", nil)

	var listed []string
	for f, err := range put.List(ctx, "", 0) {
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		listed = append(listed, f.Key)
	}
	if diff := cmp.Diff(slices.Sorted(slices.Values(keys)), listed); diff != "" {
		t.Errorf("list (-want +got):\n%s", diff)
	}
	for _, k := range keys {
		if f, err := put.Info(ctx, k); err != nil || f.Key != k || f.Size != int64(len(want[k])) {
			t.Errorf("info %q = %+v, %v", k, f, err)
		}
		u, err := put.URL(ctx, k, nil)
		if err != nil {
			t.Fatalf("url %q: %v", k, err)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want[k]) {
			t.Errorf("GET presigned URL of %q: %s %q", k, resp.Status, got)
		}
	}

	// Delete every other key: its twin stays.
	rest := map[string][]byte{}
	for i, k := range keys {
		if i%2 == 1 {
			rest[k] = want[k]
			continue
		}
		if err := put.Delete(ctx, k); err != nil {
			t.Errorf("delete %q: %v", k, err)
		}
	}
	ts.CheckBucket(t, "delete", "put", rest)
}
