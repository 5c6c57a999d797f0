package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
)

// TestETagCheckMultipart: an object uploaded in three parts of unequal
// sizes by a plain SDK client (no ferry metadata, an "md5-of-md5s-3" ETag)
// can be checked as read: ETagCheck learns its part sizes from the server
// (HeadObject with partNumber), its bytes give its ETag, and a flipped bit
// fails naming the check; Get verifies it the same way. A provider not
// known to compute that ETag (B2) gives no check, and says why.
func TestETagCheckMultipart(t *testing.T) {
	t.Parallel()
	srv := testenv.S3(t)
	if !srv.Real {
		t.Skip("needs versitygw (make tools): gofakes3 does not answer HeadObject by partNumber")
	}
	ctx := t.Context()
	bucket, key := srv.Bucket(t), "mp/object"
	sizes := []int64{storage.MinPartSize + 7, storage.MinPartSize, 1234}
	data := randBytes(t, int(sizes[0]+sizes[1]+sizes[2]))
	putParts(t, srv.Client(), bucket, key, data, sizes)

	client := newClient(t, profile(srv))
	s, _ := client.Bucket(bucket)
	info, err := s.Info(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if info.Checksum != "" || info.ETagIsMD5() || !strings.HasSuffix(info.ETag, "-3") {
		t.Fatalf("source: ETag %q, checksum %q; want a multipart ETag and no checksum", info.ETag, info.Checksum)
	}
	check, why, err := s.ETagCheck(ctx, info)
	if err != nil || check == nil {
		t.Fatalf("ETagCheck = %v, %q, %v; want a check", check, why, err)
	}
	if !slices.Equal(check.Parts, sizes) {
		t.Errorf("part sizes = %v, want %v", check.Parts, sizes)
	}
	if err := check.Verify("read", data); err != nil {
		t.Errorf("the object's own bytes: %v", err)
	}
	// Written in odd pieces that straddle the part boundaries.
	h := check.NewHash()
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 999_983)
		_, _ = h.Write(rest[:n])
		rest = rest[n:]
	}
	if err := h.Verify("read"); err != nil {
		t.Errorf("the object's bytes in pieces: %v", err)
	}
	flipped := bytes.Clone(data)
	flipped[int(sizes[0])+100] ^= 0x04
	var ie *storage.IntegrityError
	if err := check.Verify("read", flipped); !errors.As(err, &ie) || ie.Check != "ETag (MD5 of part MD5s)" {
		t.Errorf("one bit flipped in part 2: %v; want an *IntegrityError naming the multipart ETag", err)
	}
	if got, err := s.GetBytes(ctx, key); err != nil || !bytes.Equal(got, data) {
		t.Errorf("GetBytes = %d bytes, %v; want the object", len(got), err)
	}

	b2 := profile(srv)
	b2.Provider = storage.ProviderB2
	b2c := newClient(t, b2)
	sb, _ := b2c.Bucket(bucket)
	if check, why, err := sb.ETagCheck(ctx, info); check != nil || err != nil || !strings.Contains(why, "b2") {
		t.Errorf("ETagCheck on a B2 profile = %v, %q, %v; want none, saying why", check, why, err)
	}
}

// partsIgnoredS3 answers HeadObject as a server that ignores partNumber:
// the whole object, no parts count.
type partsIgnoredS3 struct {
	storage.S3API
	calls int
}

func (p *partsIgnoredS3) HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	p.calls++
	return &s3.HeadObjectOutput{ContentLength: aws.Int64(12 << 20), ETag: aws.String(`"0123456789abcdef0123456789abcdef-2"`)}, nil
}

// TestETagCheckServerIgnoresPartNumber: a server that does not tell its
// part sizes gives no check (the bytes are then unverified, and the
// caller logs why), after one request, not one per part.
func TestETagCheckServerIgnoresPartNumber(t *testing.T) {
	t.Parallel()
	api := &partsIgnoredS3{}
	c, err := storage.NewClientWithAPI(storage.Config{Provider: storage.ProviderGeneric, EndpointURL: "https://s3.example"}, api)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := c.Bucket("bucket")
	f := storage.StoredFile{Key: "k", Size: 12 << 20, ETag: "0123456789abcdef0123456789abcdef-2"}
	check, why, err := s.ETagCheck(context.Background(), f)
	if check != nil || err != nil || !strings.Contains(why, "does not tell its parts") {
		t.Errorf("ETagCheck = %v, %q, %v; want none, saying the server does not tell its parts", check, why, err)
	}
	if api.calls != 1 {
		t.Errorf("%d HEADs, want 1", api.calls)
	}
}

func putParts(t *testing.T, sc *s3.Client, bucket, key string, data []byte, sizes []int64) {
	t.Helper()
	ctx := t.Context()
	up, err := sc.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	var parts []types.CompletedPart
	off := int64(0)
	for i, n := range sizes {
		pn := aws.Int32(int32(i + 1))
		out, err := sc.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: &key, UploadId: up.UploadId, PartNumber: pn,
			Body: bytes.NewReader(data[off : off+n])})
		if err != nil {
			t.Fatalf("part %d: %v", i+1, err)
		}
		parts = append(parts, types.CompletedPart{PartNumber: pn, ETag: out.ETag})
		off += n
	}
	if _, err := sc.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: &key, UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}); err != nil {
		t.Fatal(err)
	}
}

// TestETagCheckEncrypted: an encrypted multipart object gives no check
// (KMS and SSE-C change the ETag; so does SSE-S3 outside AWS), without a
// request; AWS's SSE-S3 (AES256) keeps the MD5s and is checked.
func TestETagCheckEncrypted(t *testing.T) {
	t.Parallel()
	f := storage.StoredFile{Key: "k", Size: 12 << 20, ETag: "0123456789abcdef0123456789abcdef-2"}
	for _, tc := range []struct {
		provider   storage.Provider
		encryption string
		heads      int
	}{
		{storage.ProviderMinIO, "AES256", 0},
		{storage.ProviderAWS, "aws:kms", 0},
		{storage.ProviderAWS, "SSE-C", 0},
		{storage.ProviderAWS, "AES256", 1},
	} {
		api := &partsIgnoredS3{}
		c, err := storage.NewClientWithAPI(storage.Config{Provider: tc.provider, Region: "us-east-1", EndpointURL: "https://s3.example"}, api)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := c.Bucket("bucket")
		f.Encryption = tc.encryption
		check, why, err := s.ETagCheck(context.Background(), f)
		if check != nil || err != nil || why == "" || api.calls != tc.heads {
			t.Errorf("%s, %s: ETagCheck = %v, %q, %v after %d HEADs; want no check, a reason, %d HEADs", tc.provider, tc.encryption, check, why, err, api.calls, tc.heads)
		}
	}
}

// TestGetMultipartOnOneConnection: Get of a multipart object without a
// recorded checksum holds its GET's body open while ETagCheck HEADs each
// part to learn its size. Those HEADs must not wait for the slot the GET
// holds: with max_pool_connections 1 (or N such Gets at once on N) they
// waited for good (found by review, 2026-12-01; the transport's
// MaxConnsPerHost held the body's connection the same way before).
func TestGetMultipartOnOneConnection(t *testing.T) {
	t.Parallel()
	srv := testenv.S3(t)
	if !srv.Real {
		t.Skip("needs versitygw (make tools): gofakes3 does not answer HeadObject by partNumber")
	}
	bucket, key := srv.Bucket(t), "mp/one-connection"
	sizes := []int64{storage.MinPartSize + 3, 999}
	data := randBytes(t, int(sizes[0]+sizes[1]))
	putParts(t, srv.Client(), bucket, key, data, sizes)
	cfg := profile(srv)
	cfg.MaxPoolConnections = 1
	s, err := newClient(t, cfg).Bucket(bucket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	rc, err := s.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get with one connection: %v", err)
	}
	got, err := io.ReadAll(rc)
	_ = rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d of %d bytes, error %v", len(got), len(data), err)
	}
}
