package storage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
)

// TestConformance runs the storage API against the real S3 server
// (versitygw, or FERRY_TEST_S3_ENDPOINT).
func TestConformance(t *testing.T) {
	t.Parallel()
	conformance(t, testenv.S3(t), false)
}

// TestConformanceFake runs the same suite against in-process gofakes3: a
// fast check of the parts gofakes3 implements, never the only proof.
func TestConformanceFake(t *testing.T) {
	t.Parallel()
	conformance(t, fakeServer(t), true)
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func conformance(t *testing.T, srv *testenv.S3Server, fake bool) {
	ctx := context.Background()
	needsReal := func(t *testing.T) {
		if fake {
			t.Skip("gofakes3 does not implement this; covered by TestConformance")
		}
	}

	t.Run("put get info exists delete", func(t *testing.T) {
		t.Parallel()
		s := open(t, srv, nil)
		data := []byte("hello, ferry")
		before := time.Now().Add(-time.Minute)
		f, err := s.PutBytes(ctx, "a/b.txt", data, &storage.PutOptions{Headers: storage.Headers{ContentType: "text/plain"}, Metadata: map[string]string{"owner": "qa"}})
		if err != nil {
			t.Fatal(err)
		}
		if f.Key != "a/b.txt" || f.Size != int64(len(data)) || f.ContentType != "text/plain" || f.Metadata["owner"] != "qa" {
			t.Errorf("Put returned %+v", f)
		}
		if f.LastModified.Before(before) || f.ETag == "" {
			t.Errorf("LastModified %v / ETag %q not from the server", f.LastModified, f.ETag)
		}
		got, err := s.GetBytes(ctx, "a/b.txt")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("GetBytes = %q, %v", got, err)
		}
		rc, err := s.Get(ctx, "a/b.txt")
		if err != nil {
			t.Fatal(err)
		}
		streamed, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(streamed, data) {
			t.Errorf("Get streamed %q", streamed)
		}
		part, _, err := s.GetRange(ctx, "a/b.txt", 7, 5)
		if err != nil {
			t.Fatal(err)
		}
		pb, _ := io.ReadAll(part)
		part.Close()
		if string(pb) != "ferry" {
			t.Errorf("GetRange = %q, want ferry", pb)
		}
		info, err := s.Info(ctx, "a/b.txt")
		if err != nil {
			t.Fatal(err)
		}
		// Put takes LastModified from the answer's Date: equal to HEAD's
		// up to the second the write straddled.
		if diff := cmp.Diff(f, info, cmpopts.EquateApproxTime(time.Second)); diff != "" {
			t.Errorf("Info differs from Put (-put +info):\n%s", diff)
		}
		if ok, err := s.Exists(ctx, "a/b.txt"); !ok || err != nil {
			t.Errorf("Exists = %v, %v", ok, err)
		}
		if err := s.Delete(ctx, "a/b.txt"); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Exists(ctx, "a/b.txt"); ok || err != nil {
			t.Errorf("Exists after delete = %v, %v", ok, err)
		}
		if err := s.Delete(ctx, "a/b.txt"); err != nil {
			t.Errorf("second Delete = %v, want nil (idempotent)", err)
		}
	})

	t.Run("errors map to sentinels", func(t *testing.T) {
		t.Parallel()
		s := open(t, srv, nil)
		_, err := s.GetBytes(ctx, "missing")
		if !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("GetBytes(missing) = %v, want ErrNotFound", err)
		}
		if _, err := s.Info(ctx, "missing"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Info(missing) = %v, want ErrNotFound", err)
		}
		cfg := profile(srv)
		cfg.Bucket = "no-such-bucket-" + strings.ToLower(testenv.UniqueName("x"))[2:10]
		nb, err := storage.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nb.Info(ctx, "k"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Info on a missing bucket = %v, want ErrNotFound", err)
		}
		if _, err := nb.PutBytes(ctx, "k", []byte("x"), nil); !errors.Is(err, storage.ErrBucketNotFound) {
			t.Errorf("Put on a missing bucket = %v, want ErrBucketNotFound", err)
		}
		if ok, err := nb.Exists(ctx, "k"); ok || err == nil {
			t.Errorf("Exists on a missing bucket = %v, %v; want an error, not false", ok, err)
		}
		if _, err := s.PutBytes(ctx, "a/../b", []byte("x"), nil); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(a/../b) = %v, want ErrInvalidKey", err)
		}
	})

	t.Run("reads pinned to an ETag see a changed source", func(t *testing.T) {
		t.Parallel()
		needsReal(t)
		s := open(t, srv, nil)
		f, err := s.PutBytes(ctx, "pinned", []byte("version one"), nil)
		if err != nil {
			t.Fatal(err)
		}
		rc, _, err := s.GetRangeIfMatch(ctx, "pinned", f.ETag, 0, 7)
		if err != nil {
			t.Fatalf("read pinned to the current ETag: %v", err)
		}
		rc.Close()
		if _, err := s.PutBytes(ctx, "pinned", []byte("version two"), nil); err != nil {
			t.Fatal(err)
		}
		_, _, err = s.GetRangeIfMatch(ctx, "pinned", f.ETag, 0, 7)
		if !errors.Is(err, storage.ErrSourceChanged) || storage.IsPermanent(err) {
			t.Errorf("read pinned to an old ETag = %v; want a retryable ErrSourceChanged", err)
		}
	})

	t.Run("bad credentials are ErrPermission", func(t *testing.T) {
		t.Parallel()
		needsReal(t)
		bucket := srv.Bucket(t)
		cfg := profile(srv)
		cfg.Bucket = bucket
		cfg.SecretAccessKey = "wrong-secret"
		s, err := storage.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.PutBytes(ctx, "k", []byte("x"), nil)
		if !errors.Is(err, storage.ErrPermission) {
			t.Fatalf("Put with a wrong secret = %v, want ErrPermission", err)
		}
		if ok, err := s.Exists(ctx, "k"); ok || !errors.Is(err, storage.ErrPermission) {
			t.Errorf("Exists with a wrong secret = %v, %v; want ErrPermission (never a silent false)", ok, err)
		}
		if strings.Contains(err.Error(), "wrong-secret") {
			t.Errorf("error leaks the secret: %v", err)
		}
	})

	t.Run("prefix applied and stripped", func(t *testing.T) {
		t.Parallel()
		bucket := srv.Bucket(t)
		cfg := profile(srv)
		cfg.Bucket = bucket
		cfg.Prefix = "uploads/2024" // "/" added
		s, err := storage.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutBytes(ctx, "photo.jpg", []byte("jpg"), nil); err != nil {
			t.Fatal(err)
		}
		raw := profile(srv)
		raw.Bucket = bucket
		plain, _ := storage.New(ctx, raw)
		if ok, err := plain.Exists(ctx, "uploads/2024/photo.jpg"); !ok || err != nil {
			t.Errorf("object not stored under the prefix: %v %v", ok, err)
		}
		var keys []string
		for f, err := range s.List(ctx, "", 0) {
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, f.Key)
		}
		if diff := cmp.Diff([]string{"photo.jpg"}, keys); diff != "" {
			t.Errorf("List keys (-want +got):\n%s", diff)
		}
		f, err := s.Copy(ctx, "photo.jpg", "copy.jpg", nil)
		if err != nil || f.Key != "copy.jpg" {
			t.Errorf("Copy = %+v, %v", f, err)
		}
	})

	t.Run("list pages past 1000 keys and honours limit", func(t *testing.T) {
		t.Parallel()
		s := open(t, srv, nil)
		const n = 1105
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if _, err := s.PutBytes(ctx, fmt.Sprintf("many/%05d", i), []byte{byte(i)}, nil); err != nil {
					t.Error(err)
				}
			})
		}
		_, _ = s.PutBytes(ctx, "other/x", []byte("x"), nil)
		wg.Wait()
		count := 0
		last := ""
		for f, err := range s.List(ctx, "many/", 0) {
			if err != nil {
				t.Fatal(err)
			}
			if f.Key <= last {
				t.Fatalf("keys out of order: %q after %q", f.Key, last)
			}
			last = f.Key
			count++
		}
		if count != n {
			t.Errorf("listed %d keys, want %d", count, n)
		}
		count = 0
		for _, err := range s.List(ctx, "many/", 1001) {
			if err != nil {
				t.Fatal(err)
			}
			count++
		}
		if count != 1001 {
			t.Errorf("listed %d keys with limit 1001", count)
		}
		keys := make([]string, n)
		for i := range n {
			keys[i] = fmt.Sprintf("many/%05d", i)
		}
		if d, err := s.DeleteMany(ctx, keys); err != nil || d != n {
			t.Fatalf("DeleteMany = %d, %v", d, err)
		}
		for f, err := range s.List(ctx, "", 0) {
			if err != nil || f.Key != "other/x" {
				t.Errorf("after DeleteMany listed %q, %v", f.Key, err)
			}
		}
	})

	t.Run("presigned GET and PUT work with plain net/http", func(t *testing.T) {
		t.Parallel()
		needsReal(t)
		s := open(t, srv, nil)
		putURL, err := s.URL(ctx, "direct/upload.bin", &storage.URLOptions{Method: "PUT", Expires: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPut, putURL, strings.NewReader("via presigned put"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("presigned PUT status %d", resp.StatusCode)
		}
		getURL, err := s.URL(ctx, "direct/upload.bin", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err = http.Get(getURL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "via presigned put" {
			t.Errorf("presigned GET = %d %q", resp.StatusCode, body)
		}
		if _, err := s.URL(ctx, "k", &storage.URLOptions{Expires: 8 * 24 * time.Hour}); err == nil {
			t.Error("URL with an 8-day expiry succeeded; SigV4 allows 7 days")
		}
	})

	t.Run("multipart out of order retried parts dedupe", func(t *testing.T) {
		t.Parallel()
		needsReal(t)
		s := open(t, srv, nil)
		const ps = storage.MinPartSize
		data := randBytes(t, 2*ps+1234)
		u, err := s.StartMultipartUpload(ctx, "mp/obj", &storage.MultipartOptions{PartSize: ps, Headers: storage.Headers{ContentType: "application/x-test"}, Metadata: map[string]string{"k": "v"}})
		if err != nil {
			t.Fatal(err)
		}
		// Out of order, part 2 twice (a retry): the second ETag wins.
		for _, n := range []int{3, 2, 1, 2} {
			off := (n - 1) * ps
			if _, err := s.UploadPart(ctx, u, n, data[off:min(off+ps, len(data))]); err != nil {
				t.Fatal(err)
			}
		}
		listed, err := s.ListParts(ctx, "mp/obj", u.UploadID)
		if err != nil {
			t.Fatal(err)
		}
		// The server lists no checksums: ferry keeps its own (checkpoints).
		if diff := cmp.Diff(u.Parts(), listed, cmpopts.IgnoreFields(storage.Part{}, "Checksum")); diff != "" {
			t.Errorf("ListParts differs from recorded parts (-recorded +listed):\n%s", diff)
		}
		f, err := s.CompleteMultipartUpload(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if want := storage.ChecksumOf(data).String(); f.Checksum != want {
			t.Errorf("completed object's checksum %q, want the CRC32C of its bytes %q (combined from its parts)", f.Checksum, want)
		}
		if f.Size != int64(len(data)) || f.Metadata["k"] != "v" || f.ContentType != "application/x-test" {
			t.Errorf("completed object %+v", f)
		}
		got, _ := s.GetBytes(ctx, "mp/obj")
		if !bytes.Equal(got, data) {
			t.Error("completed object's bytes differ from the parts")
		}
		ups, err := s.ListMultipartUploads(ctx, "")
		if err != nil || len(ups) != 0 {
			t.Errorf("uploads left: %v %v", ups, err)
		}
	})

	t.Run("ListParts pages past 1000 parts", func(t *testing.T) {
		t.Parallel()
		needsReal(t)
		s := open(t, srv, nil)
		u, err := s.StartMultipartUpload(ctx, "mp/many", &storage.MultipartOptions{PartSize: storage.MinPartSize})
		if err != nil {
			t.Fatal(err)
		}
		// Parts may be tiny until Complete; 1003 one-byte parts exercise paging.
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for n := 1; n <= 1003; n++ {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if _, err := s.UploadPart(ctx, u, n, []byte{byte(n)}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		parts, err := s.ListParts(ctx, "mp/many", u.UploadID)
		if err != nil {
			t.Fatal(err)
		}
		if len(parts) != 1003 || parts[0].Number != 1 || parts[1002].Number != 1003 {
			t.Errorf("ListParts returned %d parts", len(parts))
		}
		if err := s.AbortMultipartUpload(ctx, "mp/many", u.UploadID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ListParts(ctx, "mp/many", u.UploadID); !errors.Is(err, storage.ErrUploadNotFound) {
			t.Errorf("ListParts after abort = %v, want ErrUploadNotFound", err)
		}
		if err := s.AbortMultipartUpload(ctx, "mp/many", u.UploadID); err != nil {
			t.Errorf("second abort = %v, want nil", err)
		}
	})

	t.Run("PutLarge streams with bounded concurrency and progress", func(t *testing.T) {
		t.Parallel()
		needsReal(t)
		s := open(t, srv, nil)
		data := randBytes(t, 3*storage.MinPartSize+777)
		var last, calls int64
		var mu sync.Mutex
		// A plain io.Reader (not a ReaderAt): the stream path, size unknown.
		f, err := s.PutLarge(ctx, "large/stream", io.MultiReader(bytes.NewReader(data)), &storage.LargeOptions{
			PartSize: storage.MinPartSize, Concurrency: 3,
			ProgressFunc: func(done, total int64) {
				mu.Lock()
				defer mu.Unlock()
				if done < last {
					t.Errorf("progress went backwards: %d after %d", done, last)
				}
				last = done
				calls++
			}})
		if err != nil {
			t.Fatal(err)
		}
		if f.Size != int64(len(data)) || last != int64(len(data)) || calls != 4 {
			t.Errorf("size %d, progress %d in %d calls; want %d in 4", f.Size, last, calls, len(data))
		}
		got, _ := s.GetBytes(ctx, "large/stream")
		if sha256.Sum256(got) != sha256.Sum256(data) {
			t.Error("stream upload corrupted the bytes")
		}
		// A ReaderAt of known size: concurrent reads.
		f, err = s.PutLarge(ctx, "large/readerat", bytes.NewReader(data), &storage.LargeOptions{PartSize: storage.MinPartSize, Size: int64(len(data))})
		if err != nil || f.Size != int64(len(data)) {
			t.Fatalf("PutLarge(ReaderAt) = %+v, %v", f, err)
		}
		got, _ = s.GetBytes(ctx, "large/readerat")
		if !bytes.Equal(got, data) {
			t.Error("ReaderAt upload corrupted the bytes")
		}
		// Below one part: a single PutObject, no multipart upload.
		f, err = s.PutLarge(ctx, "large/small", strings.NewReader("tiny"), nil)
		if err != nil || f.Size != 4 || strings.Contains(f.ETag, "-") {
			t.Errorf("small PutLarge = %+v, %v", f, err)
		}
	})

	t.Run("PutLarge failure aborts the upload", func(t *testing.T) {
		t.Parallel()
		needsReal(t)
		s := open(t, srv, nil)
		boom := errors.New("source broke")
		r := io.MultiReader(bytes.NewReader(randBytes(t, storage.MinPartSize+10)), errReader{boom})
		_, err := s.PutLarge(ctx, "large/broken", r, &storage.LargeOptions{PartSize: storage.MinPartSize})
		var mue *storage.MultipartUploadError
		if !errors.Is(err, boom) || !errors.As(err, &mue) || mue.UploadID == "" {
			t.Fatalf("PutLarge = %v; want the source error inside a MultipartUploadError with the upload ID", err)
		}
		ups, _ := s.ListMultipartUploads(ctx, "")
		if len(ups) != 0 {
			t.Errorf("upload left behind: %+v", ups)
		}
		if ok, _ := s.Exists(ctx, "large/broken"); ok {
			t.Error("a failed upload created the object")
		}
	})

	t.Run("copy move across buckets and the multipart copy path", func(t *testing.T) {
		t.Parallel()
		needsReal(t)
		// Exercise the >5 GiB UploadPartCopy path on a small object.
		bs := copyBuckets(t, srv, 2)
		a, b := bs[0], bs[1]
		big := randBytes(t, 2*storage.MinPartSize+99)
		if _, err := a.PutBytes(ctx, "src/big", big, &storage.PutOptions{Headers: storage.Headers{ContentType: "x/big"}, Metadata: map[string]string{"m": "1"}}); err != nil {
			t.Fatal(err)
		}
		f, err := b.CopyFrom(ctx, a, "src/big", "dst/big", &storage.CopyOptions{Metadata: map[string]string{"extra": "2"}})
		if err != nil {
			t.Fatal(err)
		}
		if f.Size != int64(len(big)) || f.Metadata["m"] != "1" || f.Metadata["extra"] != "2" || f.ContentType != "x/big" {
			t.Errorf("multipart copy = %+v", f)
		}
		got, _ := b.GetBytes(ctx, "dst/big")
		if !bytes.Equal(got, big) {
			t.Error("multipart copy corrupted the bytes")
		}
		if _, err := a.PutBytes(ctx, "src/small", []byte("small"), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := b.MoveFrom(ctx, a, "src/small", "dst/small", nil); err != nil {
			t.Fatal(err)
		}
		if ok, _ := a.Exists(ctx, "src/small"); ok {
			t.Error("move kept the source")
		}
		if got, _ := b.GetBytes(ctx, "dst/small"); string(got) != "small" {
			t.Errorf("moved object = %q", got)
		}
		if _, err := a.Move(ctx, "src/missing", "dst/x", nil); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Move of a missing source = %v, want ErrNotFound", err)
		}
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
