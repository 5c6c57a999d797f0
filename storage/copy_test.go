package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"testing"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
)

// TestCopyKeepsHeaders: every stored header (Content-Type, -Encoding,
// -Disposition, -Language, Cache-Control, Expires) and the user metadata
// survive Copy, CopyFrom and MoveFrom at every size: CopyObject keeping the
// metadata, CopyObject replacing it (CopyOptions.Metadata), and
// UploadPartCopy above the multipart copy threshold (5 MiB here). An Expires
// that is not an HTTP date is kept as it was, too.
func TestCopyKeepsHeaders(t *testing.T) {
	t.Parallel()
	srv := headerServer(t)
	bs := copyBuckets(t, srv, 2)
	a, b := bs[0], bs[1]
	ctx := context.Background()
	oddExpires := maps.Clone(testenv.StoredHeaders)
	oddExpires["Expires"] = "0"

	for _, size := range []int{5, 2*storage.MinPartSize + 7} {
		for _, meta := range []map[string]string{nil, {"extra": "2"}} {
			for hname, h := range map[string]testenv.ObjectHeaders{"dated": testenv.StoredHeaders, "odd-expires": oddExpires} {
				name := fmt.Sprintf("%d bytes, metadata %v, %s", size, meta, hname)
				t.Run(name, func(t *testing.T) {
					key := testenv.UniqueName("obj")
					srv.PutObject(t, a.Bucket(), key, randBytes(t, size), h)
					want := maps.Clone(h)
					for k, v := range meta {
						want["x-amz-meta-"+k] = v
					}
					if _, err := b.CopyFrom(ctx, a, key, "copy/"+key, &storage.CopyOptions{Metadata: meta}); err != nil {
						t.Fatal(err)
					}
					srv.CheckHeaders(t, b.Bucket(), "copy/"+key, want)
					if _, err := b.Copy(ctx, "copy/"+key, "again/"+key, &storage.CopyOptions{Metadata: meta}); err != nil {
						t.Fatal(err)
					}
					srv.CheckHeaders(t, b.Bucket(), "again/"+key, want)
					if _, err := b.MoveFrom(ctx, a, key, "moved/"+key, &storage.CopyOptions{Metadata: meta}); err != nil {
						t.Fatal(err)
					}
					srv.CheckHeaders(t, b.Bucket(), "moved/"+key, want)
				})
			}
		}
	}
}

// TestHeadersRoundTrip: what Put, PutLarge (multipart) and
// StartMultipartUpload are given as Headers is what Info and GetRange
// return, Expires byte for byte.
func TestHeadersRoundTrip(t *testing.T) {
	t.Parallel()
	srv := headerServer(t)
	ctx := context.Background()
	s := open(t, srv, nil)
	for _, expires := range []string{"Wed, 02 Jan 2030 03:04:05 GMT", "0", "Wednesday, 02-Jan-30 03:04:05 GMT"} {
		h := storage.Headers{ContentType: "text/x-ferry-test", ContentEncoding: "gzip", ContentDisposition: `inline; filename="a b.txt"`,
			CacheControl: "no-cache", ContentLanguage: "de", Expires: expires}
		for _, size := range []int{3, storage.MinPartSize + 1} {
			key := testenv.UniqueName("obj")
			if _, err := s.PutLarge(ctx, key, bytes.NewReader(randBytes(t, size)), &storage.LargeOptions{Headers: h, PartSize: storage.MinPartSize}); err != nil {
				t.Fatal(err)
			}
			f, err := s.Info(ctx, key)
			if err != nil || f.Headers != h {
				t.Errorf("%d bytes, Expires %q: Info = %+v, %v; want %+v", size, expires, f.Headers, err, h)
			}
			rc, g, err := s.GetRange(ctx, key, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			rc.Close()
			if g.Headers != h {
				t.Errorf("%d bytes, Expires %q: GetRange = %+v; want %+v", size, expires, g.Headers, h)
			}
		}
	}
}

// copyBuckets is n fresh buckets of srv, all through one client whose
// copies go multipart above 5 MiB (storage.MinPartSize), in parts of that
// size: the UploadPartCopy path of objects over 5 GiB, on small objects.
func copyBuckets(t *testing.T, srv *testenv.S3Server, n int) []*storage.S3 {
	t.Helper()
	cfg := profile(srv)
	cfg.MultipartCopyThreshold = storage.MinPartSize
	cfg.CopyPartSize = storage.MinPartSize
	return buckets(t, srv, newClient(t, cfg), n)
}

// buckets is n fresh buckets of srv through client.
func buckets(t *testing.T, srv *testenv.S3Server, client *storage.Client, n int) []*storage.S3 {
	t.Helper()
	bs := make([]*storage.S3, n)
	for i := range bs {
		var err error
		if bs[i], err = client.Bucket(srv.Bucket(t)); err != nil {
			t.Fatal(err)
		}
	}
	return bs
}

// headerServer is the test S3 server, when it stores headers (gofakes3,
// the fallback without versitygw, does not).
func headerServer(t *testing.T) *testenv.S3Server {
	t.Helper()
	srv := testenv.S3(t)
	if !srv.Real {
		t.Skip("gofakes3 does not store these headers; needs versitygw (make tools)")
	}
	return srv
}
