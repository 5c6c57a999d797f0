package devserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

func client(s *S3) *s3.Client {
	return s3.New(s3.Options{
		Region:                     "us-east-1",
		BaseEndpoint:               aws.String(s.Endpoint()),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider("k", "s", ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

func startS3(t *testing.T, dir string) *S3 {
	t.Helper()
	s, err := StartS3("127.0.0.1:0", S3Options{Dir: dir, Buckets: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func get(t *testing.T, c *s3.Client, key, rng string) string {
	t.Helper()
	in := &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String(key)}
	if rng != "" {
		in.Range = aws.String(rng)
	}
	out, err := c.GetObject(t.Context(), in)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, _ := io.ReadAll(out.Body)
	return string(b)
}

func put(t *testing.T, c *s3.Client, key, body string) {
	t.Helper()
	if _, err := c.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String(key),
		Body: bytes.NewReader([]byte(body)), Metadata: map[string]string{"ferry-task-id": "t1"}}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func TestS3Objects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startS3(t, dir)
	c := client(s)
	ctx := t.Context()
	for _, k := range []string{"a/1", "a/2", "a/b/3", "a", "c/../d", "z"} {
		put(t, c, k, "content of "+k)
	}
	if got := get(t, c, "a/b/3", ""); got != "content of a/b/3" {
		t.Errorf("get a/b/3 = %q", got)
	}
	if got := get(t, c, "a/b/3", "bytes=3-6"); got != "tent" {
		t.Errorf("range 3-6 = %q", got)
	}
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("b"), Key: aws.String("a/1")})
	if err != nil || head.Metadata["ferry-task-id"] != "t1" || aws.ToInt64(head.ContentLength) != int64(len("content of a/1")) {
		t.Errorf("head a/1: %v %v %d", err, head.Metadata, aws.ToInt64(head.ContentLength))
	}

	// Pages of 2, with a delimiter.
	var keys, prefixes []string
	in := &s3.ListObjectsV2Input{Bucket: aws.String("b"), Delimiter: aws.String("/"), MaxKeys: aws.Int32(2)}
	for pg := s3.NewListObjectsV2Paginator(c, in); pg.HasMorePages(); {
		out, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
		for _, p := range out.CommonPrefixes {
			prefixes = append(prefixes, aws.ToString(p.Prefix))
		}
	}
	if diff := cmp.Diff([]string{"a", "z"}, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"a/", "c/"}, prefixes); diff != "" {
		t.Errorf("prefixes (-want +got):\n%s", diff)
	}

	if _, err := c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String("b"), Key: aws.String("copy"), CopySource: aws.String("b/a/1")}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, "copy", ""); got != "content of a/1" {
		t.Errorf("copy = %q", got)
	}
	if _, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String("b"), Delete: &types.Delete{
		Objects: []types.ObjectIdentifier{{Key: aws.String("a/1")}, {Key: aws.String("missing")}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("b"), Key: aws.String("a/1")}); err == nil {
		t.Error("a/1 still exists after DeleteObjects")
	}

	// Everything survives a restart on the same directory.
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	c = client(startS3(t, dir))
	if got := get(t, c, "c/../d", ""); got != "content of c/../d" {
		t.Errorf("after restart, c/../d = %q", got)
	}
	if got := get(t, c, "copy", ""); got != "content of a/1" {
		t.Errorf("after restart, copy = %q", got)
	}
}

func TestS3Multipart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startS3(t, dir)
	c := client(s)
	ctx := t.Context()
	mu, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("b"), Key: aws.String("big"),
		Metadata: map[string]string{"ferry-task-id": "t2"}})
	if err != nil {
		t.Fatal(err)
	}
	parts := [][]byte{bytes.Repeat([]byte("1"), 5<<20), bytes.Repeat([]byte("2"), 5<<20), []byte("tail")}
	etags := map[int32]string{}
	upload := func(c *s3.Client, n int32) {
		out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("b"), Key: aws.String("big"), UploadId: mu.UploadId,
			PartNumber: aws.Int32(n), Body: bytes.NewReader(parts[n-1])})
		if err != nil {
			t.Fatalf("part %d: %v", n, err)
		}
		etags[n] = aws.ToString(out.ETag)
	}
	upload(c, 1)
	upload(c, 2)

	// The unfinished upload and its parts survive a restart.
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	c = client(startS3(t, dir))
	ups, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String("b")})
	if err != nil || len(ups.Uploads) != 1 || aws.ToString(ups.Uploads[0].UploadId) != aws.ToString(mu.UploadId) {
		t.Fatalf("ListMultipartUploads after restart: %v %+v", err, ups)
	}
	upload(c, 3)
	var listed []int32
	for pg := s3.NewListPartsPaginator(c, &s3.ListPartsInput{Bucket: aws.String("b"), Key: aws.String("big"), UploadId: mu.UploadId, MaxParts: aws.Int32(2)}); pg.HasMorePages(); {
		out, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range out.Parts {
			listed = append(listed, aws.ToInt32(p.PartNumber))
			if aws.ToString(p.ETag) != etags[aws.ToInt32(p.PartNumber)] {
				t.Errorf("part %d: ETag %s, uploaded %s", aws.ToInt32(p.PartNumber), aws.ToString(p.ETag), etags[aws.ToInt32(p.PartNumber)])
			}
		}
	}
	if diff := cmp.Diff([]int32{1, 2, 3}, listed); diff != "" {
		t.Fatalf("ListParts in pages of 2 (-want +got):\n%s", diff)
	}
	var done []types.CompletedPart
	for n := int32(1); n <= 3; n++ {
		done = append(done, types.CompletedPart{PartNumber: aws.Int32(n), ETag: aws.String(etags[n])})
	}
	out, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("b"), Key: aws.String("big"),
		UploadId: mu.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: done}})
	if err != nil {
		t.Fatal(err)
	}
	if etag := aws.ToString(out.ETag); !bytes.HasSuffix([]byte(etag), []byte(`-3"`)) {
		t.Errorf("multipart ETag %s, want the -3 form", etag)
	}
	got := get(t, c, "big", "")
	if want := string(bytes.Join(parts, nil)); got != want {
		t.Fatalf("completed object: %d bytes, want %d", len(got), len(want))
	}
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("b"), Key: aws.String("big")})
	if err != nil || head.Metadata["ferry-task-id"] != "t2" {
		t.Errorf("head big: %v, metadata %v", err, head.Metadata)
	}
	// A completed (or aborted) upload is gone.
	if _, err := c.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String("b"), Key: aws.String("big"), UploadId: mu.UploadId}); err == nil {
		t.Error("ListParts of a completed upload succeeded, want NoSuchUpload")
	}
}

func TestPortTaken(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	if _, err := StartS3(addr, S3Options{Dir: t.TempDir()}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("StartS3 on a taken port: %v, want EADDRINUSE", err)
	}
	if _, err := StartRedis(addr, RedisOptions{}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("StartRedis on a taken port: %v, want EADDRINUSE", err)
	}
}

// TestRedisRunsAsynq runs real asynq tasks through miniredis: enqueue,
// process, a retry, a scheduled task, and unique locks expiring in real
// time (StartRedis advances miniredis's clock).
func TestRedisRunsAsynq(t *testing.T) {
	t.Parallel()
	r, err := StartRedis("127.0.0.1:0", RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	cl := asynq.NewClientFromRedisClient(rdb)
	const n = 20
	var done, failedOnce atomic.Int32
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 4, TaskCheckInterval: 50 * time.Millisecond,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return 100 * time.Millisecond },
		LogLevel:       asynq.FatalLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc("t", func(_ context.Context, task *asynq.Task) error {
		if string(task.Payload()) == "0" && failedOnce.Add(1) == 1 {
			return errors.New("fail once")
		}
		done.Add(1)
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	for i := range n {
		opts := []asynq.Option{asynq.MaxRetry(3), asynq.Retention(time.Minute)}
		if i == 1 {
			opts = append(opts, asynq.ProcessIn(300*time.Millisecond))
		}
		if _, err := cl.Enqueue(asynq.NewTask("t", []byte(fmt.Sprint(i))), opts...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.Enqueue(asynq.NewTask("t", []byte("u")), asynq.Unique(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Enqueue(asynq.NewTask("t", []byte("u")), asynq.Unique(2*time.Second)); !errors.Is(err, asynq.ErrDuplicateTask) {
		t.Fatalf("second unique enqueue: %v, want ErrDuplicateTask", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for done.Load() < n+1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := done.Load(); got != n+1 {
		t.Fatalf("%d tasks done, want %d", got, n+1)
	}
	// The unique lock of a finished task is released; a TTL expires on the
	// wall clock.
	if err := rdb.Set(t.Context(), "ttl", "x", time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if n, _ := rdb.Exists(t.Context(), "ttl").Result(); n != 0 {
		t.Error("a key with a 1s TTL still exists after 2.5s")
	}
	_ = cl.Close()
}

func TestRedisSnapshot(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "snap.json")
	r, err := StartRedis("127.0.0.1:0", RedisOptions{SnapshotFile: file})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	rdb.Set(ctx, "s", "v", time.Hour)
	rdb.HSet(ctx, "h", "f1", "1", "f2", "2")
	rdb.RPush(ctx, "l", "a", "b", "c")
	rdb.SAdd(ctx, "set", "x", "y")
	rdb.ZAdd(ctx, "z", redis.Z{Score: 1.5, Member: "m1"}, redis.Z{Score: 3, Member: "m2"})
	_ = rdb.Close()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r, err = StartRedis("127.0.0.1:0", RedisOptions{SnapshotFile: file})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rdb = redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	type state struct {
		S   string
		TTL bool
		H   map[string]string
		L   []string
		Set []string
		Z   []redis.Z
	}
	got := state{
		S:   rdb.Get(ctx, "s").Val(),
		TTL: rdb.TTL(ctx, "s").Val() > 59*time.Minute,
		H:   rdb.HGetAll(ctx, "h").Val(),
		L:   rdb.LRange(ctx, "l", 0, -1).Val(),
		Set: rdb.SMembers(ctx, "set").Val(),
		Z:   rdb.ZRangeWithScores(ctx, "z", 0, -1).Val(),
	}
	want := state{S: "v", TTL: true, H: map[string]string{"f1": "1", "f2": "2"}, L: []string{"a", "b", "c"},
		Set: []string{"x", "y"}, Z: []redis.Z{{Score: 1.5, Member: "m1"}, {Score: 3, Member: "m2"}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("state after a snapshot and restart (-want +got):\n%s", diff)
	}
}
