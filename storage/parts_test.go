package storage_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ferryhq/ferry/storage"
)

// TestPutLargeExactlyMaxParts proves an upload of exactly 10,000 parts
// completes: the engine must learn that part 10,000 was the last before it
// refuses a part 10,001 (it used to refuse first, so such uploads failed on
// every retry and were then aborted).
func TestPutLargeExactlyMaxParts(t *testing.T) {
	t.Parallel()
	const size = storage.MaxParts * storage.MinPartSize
	for _, tc := range []struct {
		desc string
		body func() io.Reader
	}{
		{desc: "random access (a file)", body: func() io.Reader { return &zeros{n: size} }},
		{desc: "stream of known size", body: func() io.Reader { return onlyReader{&zeros{n: size}} }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			s, fake := fakeStorage(t, storage.ProviderAWS)
			f, err := s.PutLarge(context.Background(), "big.bin", tc.body(), &storage.LargeOptions{Size: size, PartSize: storage.MinPartSize})
			if err != nil {
				t.Fatalf("PutLarge of exactly %d parts: %v", storage.MaxParts, err)
			}
			want := []string{"CreateMultipartUpload", "UploadPart×10000", "CompleteMultipartUpload", "HeadObject"}
			if diff := cmp.Diff(want, fake.sequence()); diff != "" {
				t.Errorf("S3 calls (-want +got):\n%s", diff)
			}
			if f.Size != size {
				t.Errorf("stored size = %d, want %d", f.Size, size)
			}
		})
	}
}

// TestUploadPartsRefusesPart10001 keeps the limit: a stream one byte longer
// than 10,000 parts fails with a clear error after uploading 10,000 parts
// and never sends part 10,001.
func TestUploadPartsRefusesPart10001(t *testing.T) {
	t.Parallel()
	s, fake := fakeStorage(t, storage.ProviderAWS)
	ctx := context.Background()
	u, err := s.StartMultipartUpload(ctx, "big.bin", &storage.MultipartOptions{PartSize: storage.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	src := storage.StreamSource(&zeros{n: storage.MaxParts*storage.MinPartSize + 1})
	err = s.UploadParts(ctx, u, src, storage.PartsOptions{})
	if err == nil || !strings.Contains(err.Error(), "more than 10000 parts") {
		t.Fatalf("UploadParts of 10,000 parts and one byte: error = %v, want one saying more than 10000 parts", err)
	}
	want := []string{"CreateMultipartUpload", "UploadPart×10000"}
	if diff := cmp.Diff(want, fake.sequence()); diff != "" {
		t.Errorf("S3 calls (-want +got):\n%s", diff)
	}
}

// TestPutLargeTebibyteStream streams 1 TiB of unknown length with default
// settings through the engine (the fake discards parts unread). On a
// provider that accepts mixed part sizes the parts grow as the stream goes;
// on R2, which needs equal parts, every part but the last has one size.
func TestPutLargeTebibyteStream(t *testing.T) {
	t.Parallel()
	const size = 1 << 40
	for _, tc := range []struct {
		desc     string
		provider storage.Provider
		equal    bool
	}{
		{desc: "aws grows part sizes", provider: storage.ProviderAWS},
		{desc: "r2 keeps parts equal", provider: storage.ProviderR2, equal: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			s, fake := fakeStorage(t, tc.provider)
			f, err := s.PutLarge(context.Background(), "stream.bin", onlyReader{&zeros{n: size}}, nil)
			if err != nil {
				t.Fatalf("PutLarge of a 1 TiB stream with default settings: %v", err)
			}
			if f.Size != size {
				t.Errorf("stored size = %d, want %d", f.Size, size)
			}
			sizes := fake.partSizes()
			seq := fake.sequence()
			if len(seq) != 4 || seq[0] != "CreateMultipartUpload" || !strings.HasPrefix(seq[1], "UploadPart×") ||
				seq[2] != "CompleteMultipartUpload" || seq[3] != "HeadObject" {
				t.Errorf("S3 calls = %s, want CreateMultipartUpload, UploadPart×N, CompleteMultipartUpload, HeadObject", joinSeq(seq))
			}
			var sum int64
			for i, sz := range sizes {
				sum += sz
				if i == len(sizes)-1 {
					break
				}
				if sz > 128<<20 {
					t.Fatalf("part %d is %d bytes, above the 128 MiB a default stream may use", i+1, sz)
				}
				if tc.equal && sz != sizes[0] {
					t.Fatalf("part %d is %d bytes but part 1 is %d: %s needs equal parts", i+1, sz, sizes[0], tc.provider)
				}
				if !tc.equal && sz < sizes[max(i-1, 0)] {
					t.Fatalf("part %d (%d bytes) is smaller than part %d (%d)", i+1, sz, i, sizes[i-1])
				}
			}
			if sum != size {
				t.Errorf("parts add up to %d bytes, want %d", sum, size)
			}
			if !tc.equal && sizes[0] != storage.DefaultPartSize {
				t.Errorf("part 1 is %d bytes, want the default part size %d (small streams keep small parts)", sizes[0], storage.DefaultPartSize)
			}
			t.Logf("%d parts; first %d bytes, last full %d bytes", len(sizes), sizes[0], sizes[len(sizes)-2])
		})
	}
}

// TestUploadPartsInOrder: InOrder sees every part once, in part order, with
// its bytes — parts Skip reports done included (read, not uploaded) — while
// parts upload concurrently from a pool that holds fewer buffers than
// parts in flight could want, shared with nothing else: the lowest part
// always gets a buffer, so the ordered wait never deadlocks.
func TestUploadPartsInOrder(t *testing.T) {
	t.Parallel()
	const parts = 12
	data := make([]byte, parts*storage.MinPartSize-1000)
	for i := 0; i+4 <= len(data); i += 4096 { // every block its own bytes
		binary.BigEndian.PutUint32(data[i:], uint32(i))
	}
	s, fake := fakeStorage(t, storage.ProviderAWS)
	ctx := context.Background()
	u, err := s.StartMultipartUpload(ctx, "ordered.bin", &storage.MultipartOptions{PartSize: storage.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	var seen []int
	var got bytes.Buffer
	done := map[int]bool{1: true, 2: true, 7: true, parts: true}
	err = s.UploadParts(ctx, u, storage.ReaderAtSource(bytes.NewReader(data), int64(len(data))), storage.PartsOptions{
		Concurrency: 8, Buffers: storage.NewBufferPool(3 * storage.MinPartSize),
		Skip: func(n int) bool { return done[n] },
		InOrder: func(n int, b []byte) {
			seen = append(seen, n) // no lock: InOrder runs one part at a time
			got.Write(b)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range seen {
		if n != i+1 {
			t.Fatalf("InOrder saw parts %v; want 1..%d in order", seen, parts)
		}
	}
	if len(seen) != parts || !bytes.Equal(got.Bytes(), data) {
		t.Errorf("InOrder saw %d parts, %d bytes; want %d parts, the source's %d bytes", len(seen), got.Len(), parts, len(data))
	}
	if n := len(fake.partSizes()); n != parts-len(done) {
		t.Errorf("%d parts uploaded; want %d (the skipped ones are read, not sent)", n, parts-len(done))
	}
}

// TestCompleteResentWhenReceivedCorrupted: a Complete the server rejects
// as received corrupted (XAmzContentSHA256Mismatch: a bit flipped in its
// parts list on the way) changed nothing there and is sent again, up to
// four sends; the fourth rejection is the caller's, as ErrIntegrity.
func TestCompleteResentWhenReceivedCorrupted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		reject, sends int
		ok            bool
	}{{0, 1, true}, {storage.IntegritySends - 1, storage.IntegritySends, true}, {storage.IntegritySends, storage.IntegritySends, false}} {
		s, fake := fakeStorage(t, storage.ProviderGeneric)
		ctx := context.Background()
		u, err := s.StartMultipartUpload(ctx, "resent.bin", &storage.MultipartOptions{PartSize: storage.MinPartSize})
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, storage.MinPartSize+10)
		if err := s.UploadParts(ctx, u, storage.ReaderAtSource(bytes.NewReader(data), int64(len(data))), storage.PartsOptions{Concurrency: 2}); err != nil {
			t.Fatal(err)
		}
		fake.mu.Lock()
		fake.rejectComplete = tc.reject
		fake.mu.Unlock()
		_, err = s.CompleteMultipartUpload(ctx, u)
		fake.mu.Lock()
		sends := strings.Count(strings.Join(fake.calls, " "), "CompleteMultipartUpload")
		fake.mu.Unlock()
		if (err == nil) != tc.ok || sends != tc.sends {
			t.Errorf("%d rejected: Complete = %v after %d sends; want ok=%v after %d", tc.reject, err, sends, tc.ok, tc.sends)
		}
		if !tc.ok && !errors.Is(err, storage.ErrIntegrity) {
			t.Errorf("%d rejected: %v, want ErrIntegrity", tc.reject, err)
		}
	}
}
