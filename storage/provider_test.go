package storage_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
)

// TestVersityVerifiesCRC32C is the proof behind the versitygw provider's
// quirk (crc32cHeader): the pinned versitygw checks x-amz-checksum-crc32c
// against the bytes it receives, on PutObject, on UploadPart and on a
// FULL_OBJECT CompleteMultipartUpload, answering BadDigest when it differs.
// Were it to ignore the header, ferry's writes to it would go unverified:
// this test then fails, and the provider must go back to Content-MD5.
func TestVersityVerifiesCRC32C(t *testing.T) {
	t.Parallel()
	srv := testenv.S3(t)
	c := srv.Client()
	bucket := srv.Bucket(t)
	ctx := t.Context()
	data := bytes.Repeat([]byte("ferry crc32c "), 5000)
	part := bytes.Repeat([]byte("p"), storage.MinPartSize)
	crc := func(b []byte) *string { return aws.String(storage.ChecksumOf(b).String()) }
	wrong := crc([]byte("other bytes"))
	badDigest := func(what string, err error) {
		t.Helper()
		if ae, ok := errors.AsType[smithy.APIError](err); !ok || ae.ErrorCode() != "BadDigest" {
			t.Errorf("%s with a wrong CRC32C = %v; want BadDigest", what, err)
		}
	}

	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("put"), Body: bytes.NewReader(data), ChecksumCRC32C: wrong})
	badDigest("PutObject", err)
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("put"), Body: bytes.NewReader(data), ChecksumCRC32C: crc(data)}); err != nil {
		t.Fatalf("PutObject with the right CRC32C: %v", err)
	}

	key := aws.String("multipart")
	mu, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: key,
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c, ChecksumType: types.ChecksumTypeFullObject})
	if err != nil {
		t.Fatal(err)
	}
	up := func(n int32, b []byte, sum *string) (*s3.UploadPartOutput, error) {
		return c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: key, UploadId: mu.UploadId, PartNumber: &n, Body: bytes.NewReader(b), ChecksumCRC32C: sum})
	}
	_, err = up(1, part, wrong)
	badDigest("UploadPart", err)
	p1, err1 := up(1, part, crc(part))
	p2, err2 := up(2, data, crc(data))
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("UploadPart with the right CRC32C: %v", err)
	}
	complete := func(sum *string) error {
		_, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: key, UploadId: mu.UploadId,
			ChecksumCRC32C: sum, ChecksumType: types.ChecksumTypeFullObject,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{
				{PartNumber: aws.Int32(1), ETag: p1.ETag, ChecksumCRC32C: crc(part)},
				{PartNumber: aws.Int32(2), ETag: p2.ETag, ChecksumCRC32C: crc(data)}}}})
		return err
	}
	badDigest("CompleteMultipartUpload", complete(wrong))
	whole := append(append([]byte{}, part...), data...)
	if err := complete(crc(whole)); err != nil {
		t.Fatalf("CompleteMultipartUpload with the right CRC32C: %v", err)
	}
	h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: key, ChecksumMode: types.ChecksumModeEnabled})
	if err != nil || aws.ToString(h.ChecksumCRC32C) != *crc(whole) || h.ChecksumType != types.ChecksumTypeFullObject {
		t.Errorf("HEAD of the completed upload: CRC32C %q (%s), %v; want %q FULL_OBJECT", aws.ToString(h.ChecksumCRC32C), h.ChecksumType, err, *crc(whole))
	}
}

// TestVersityProviderWrites: through ferry's storage on the versitygw
// provider a put and a multipart upload record their CRC32C, and a HEAD
// reads it back: the path AWS profiles take, here against a real server.
func TestVersityProviderWrites(t *testing.T) {
	t.Parallel()
	s := open(t, testenv.S3(t), func(c *storage.Config) { c.Provider = storage.ProviderVersity })
	ctx := t.Context()
	small := []byte("a small object")
	large := bytes.Repeat([]byte("L"), storage.MinPartSize+12345)
	for key, data := range map[string][]byte{"small": small, "large": large} {
		var err error
		if len(data) > storage.MinPartSize {
			_, err = s.PutLarge(ctx, key, bytes.NewReader(data), &storage.LargeOptions{PartSize: storage.MinPartSize})
		} else {
			_, err = s.PutBytes(ctx, key, data, nil)
		}
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		f, err := s.Info(ctx, key)
		if want := storage.ChecksumOf(data).String(); err != nil || f.Checksum != want {
			t.Errorf("%s: Info checksum %q (%v); want %q", key, f.Checksum, err, want)
		}
		if got, err := s.GetBytes(ctx, key); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: read back %d bytes (%v); want its %d", key, len(got), err, len(data))
		}
	}
}

// TestVersityCompleteFillsPartChecksums: an upload created with a CRC32C
// algorithm must be completed with every part's checksum. Parts recorded
// without theirs (an older ferry's checkpoint, a caller that kept only
// ETags) get them from the server's listing, and the upload completes.
func TestVersityCompleteFillsPartChecksums(t *testing.T) {
	t.Parallel()
	s := open(t, testenv.S3(t), func(c *storage.Config) { c.Provider = storage.ProviderVersity })
	ctx := t.Context()
	u, err := s.StartMultipartUpload(ctx, "resumed", &storage.MultipartOptions{PartSize: storage.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	one, two := bytes.Repeat([]byte("1"), storage.MinPartSize), []byte("the last part")
	var kept []storage.Part
	for n, b := range [][]byte{one, two} {
		p, err := s.UploadPart(ctx, u, n+1, b)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, storage.Part{Number: p.Number, ETag: p.ETag, Size: p.Size}) // no checksum
	}
	f, err := s.CompleteMultipartUpload(ctx, storage.NewMultipartUpload("resumed", u.UploadID, storage.MinPartSize, kept))
	want := storage.ChecksumOf(append(append([]byte{}, one...), two...)).String()
	if err != nil || f.Checksum != want {
		t.Fatalf("Complete of parts recorded without checksums = %q, %v; want completed with checksum %q", f.Checksum, err, want)
	}
}

// TestVersityMultipartCopy: a server-side copy in parts (UploadPartCopy)
// on a CRC32C provider completes: each part's CRC32C comes from the
// server's answer to the part's copy, and Complete repeats them, as an
// upload created with a CRC32C algorithm requires. The copy records the
// source's checksum.
func TestVersityMultipartCopy(t *testing.T) {
	t.Parallel()
	s := open(t, testenv.S3(t), func(c *storage.Config) {
		c.Provider = storage.ProviderVersity
		c.MultipartCopyThreshold = storage.MinPartSize
		c.CopyPartSize = storage.MinPartSize
	})
	ctx := t.Context()
	data := bytes.Repeat([]byte("copy in parts "), (2*storage.MinPartSize+4321)/14)
	if _, err := s.PutBytes(ctx, "big", data, nil); err != nil {
		t.Fatal(err)
	}
	f, err := s.Copy(ctx, "big", "big-copy", nil)
	if err != nil {
		t.Fatalf("multipart copy on the versitygw provider: %v", err)
	}
	if want := storage.ChecksumOf(data).String(); f.Checksum != want || !strings.Contains(f.ETag, "-") {
		t.Errorf("copy: checksum %q, ETag %q; want %q and a multipart ETag", f.Checksum, f.ETag, want)
	}
	if got, err := s.GetBytes(ctx, "big-copy"); err != nil || !bytes.Equal(got, data) {
		t.Errorf("copy holds %d bytes (%v); want the source's %d", len(got), err, len(data))
	}
}
