package storage_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ferryhq/ferry/storage"
)

// TestChecksumAppend: the CRC32C of parts combined with Append equals the
// CRC32C of the whole, whatever the split, and String/ParseChecksum
// round-trip in S3's header format.
func TestChecksumAppend(t *testing.T) {
	t.Parallel()
	data := make([]byte, 3<<20+17)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	whole := storage.ChecksumOf(data)
	if want := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)); whole.CRC != want {
		t.Fatalf("ChecksumOf = %08x, hash/crc32 says %08x", whole.CRC, want)
	}
	for range 50 {
		var sum storage.Checksum
		for off := 0; off < len(data); {
			n := min(len(data)-off, rand.IntN(1<<20)) // zero-length pieces too
			sum = sum.Append(storage.ChecksumOf(data[off : off+n]))
			off += n
		}
		if sum != whole {
			t.Fatalf("parts combine to %+v, the whole is %+v", sum, whole)
		}
	}
	if got := (storage.Checksum{}).Update(data[:100]).Update(data[100:]); got != whole {
		t.Errorf("Update in two steps = %+v, want %+v", got, whole)
	}
	parsed, err := storage.ParseChecksum(whole.String(), whole.Size)
	if err != nil || parsed != whole {
		t.Errorf("ParseChecksum(%q) = %+v, %v; want %+v", whole.String(), parsed, err, whole)
	}
	if _, err := storage.ParseChecksum("not base64!", 1); err == nil {
		t.Error("ParseChecksum accepted garbage")
	}
}

// fakeS3 records the integrity headers of UploadPart and PutObject and
// rejects the first reject requests with BadDigest, as a server does when
// the body that arrived does not match them.
type fakeS3 struct {
	storage.S3API
	mu      sync.Mutex
	reject  int
	sends   int
	md5s    []string
	crcs    []string
	create  *s3.CreateMultipartUploadInput
	putMeta map[string]string
}

func badDigest() error {
	return &smithy.OperationError{ServiceID: "S3", OperationName: "UploadPart", Err: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 400}},
		Err:      &smithy.GenericAPIError{Code: "BadDigest", Message: "The Content-MD5 you specified did not match what we received."}}}
}

func (f *fakeS3) record(md5, crc *string, body io.Reader) error {
	_, _ = io.Copy(io.Discard, body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends++
	f.md5s = append(f.md5s, aws.ToString(md5))
	f.crcs = append(f.crcs, aws.ToString(crc))
	if f.sends <= f.reject {
		return badDigest()
	}
	return nil
}

func (f *fakeS3) UploadPart(_ context.Context, in *s3.UploadPartInput, _ ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	if err := f.record(in.ContentMD5, in.ChecksumCRC32C, in.Body); err != nil {
		return nil, err
	}
	return &s3.UploadPartOutput{ETag: aws.String(`"etag"`)}, nil
}

func (f *fakeS3) PutObject(_ context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if err := f.record(in.ContentMD5, in.ChecksumCRC32C, in.Body); err != nil {
		return nil, err
	}
	f.putMeta = in.Metadata
	return &s3.PutObjectOutput{ETag: aws.String(`"etag"`)}, nil
}

func (f *fakeS3) HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	return &s3.HeadObjectOutput{Metadata: f.putMeta}, nil
}

func (f *fakeS3) CreateMultipartUpload(_ context.Context, in *s3.CreateMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	f.create = in
	return &s3.CreateMultipartUploadOutput{UploadId: aws.String("up")}, nil
}

func integrityStorage(t *testing.T, provider storage.Provider, api storage.S3API) *storage.S3 {
	t.Helper()
	cfg := storage.Config{Provider: provider, EndpointURL: "https://s3.example"}
	c, err := storage.NewClientWithAPI(cfg, api)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Bucket("bucket")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPartIntegrityHeaders: every UploadPart and PutObject carries the
// Content-MD5 of its bytes (CRC32C on AWS), a part or put the server
// rejects as corrupt is sent again, and after IntegritySends rejections the
// error is a permanent *IntegrityError naming the check.
func TestPartIntegrityHeaders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	data := []byte("the bytes as read from the source")
	sum := md5.Sum(data)
	wantMD5 := base64.StdEncoding.EncodeToString(sum[:])
	wantCRC := storage.ChecksumOf(data).String()
	for _, tc := range []struct {
		desc     string
		provider storage.Provider
		reject   int
		put      bool
	}{
		{"part, accepted", storage.ProviderGeneric, 0, false},
		{"part, rejected twice then accepted", storage.ProviderR2, 2, false},
		{"part, rejected every time", storage.ProviderMinIO, storage.IntegritySends, false},
		{"part on AWS: CRC32C", storage.ProviderAWS, 1, false},
		{"put, rejected twice then accepted", storage.ProviderB2, 2, true},
		{"put, rejected every time", storage.ProviderSpaces, storage.IntegritySends, true},
		{"put on AWS: CRC32C", storage.ProviderAWS, 0, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			f := &fakeS3{reject: tc.reject}
			s := integrityStorage(t, tc.provider, f)
			var err error
			if tc.put {
				_, err = s.Put(ctx, "k", bytes.NewReader(data), nil)
			} else {
				u, serr := s.StartMultipartUpload(ctx, "k", nil)
				if serr != nil {
					t.Fatal(serr)
				}
				if tc.provider == storage.ProviderAWS && (f.create.ChecksumAlgorithm != types.ChecksumAlgorithmCrc32c || f.create.ChecksumType != types.ChecksumTypeFullObject) {
					t.Errorf("AWS upload created with checksum %q/%q, want CRC32C/FULL_OBJECT", f.create.ChecksumAlgorithm, f.create.ChecksumType)
				}
				var p storage.Part
				p, err = s.UploadPart(ctx, u, 1, data)
				if err == nil && p.Checksum != wantCRC {
					t.Errorf("part checksum %q, want %q", p.Checksum, wantCRC)
				}
			}
			wantSends := min(tc.reject+1, storage.IntegritySends)
			if f.sends != wantSends {
				t.Errorf("sent %d times, want %d", f.sends, wantSends)
			}
			for i := range f.sends {
				if tc.provider == storage.ProviderAWS {
					if f.crcs[i] != wantCRC || f.md5s[i] != "" {
						t.Errorf("send %d: CRC32C %q, Content-MD5 %q; want %q and none", i+1, f.crcs[i], f.md5s[i], wantCRC)
					}
				} else if f.md5s[i] != wantMD5 || f.crcs[i] != "" {
					t.Errorf("send %d: Content-MD5 %q, CRC32C %q; want %q and none", i+1, f.md5s[i], f.crcs[i], wantMD5)
				}
			}
			if tc.reject < storage.IntegritySends {
				if err != nil {
					t.Fatalf("err = %v after %d rejections", err, tc.reject)
				}
				if tc.put && f.putMeta[storage.MetaChecksum] != wantCRC {
					t.Errorf("put recorded %s=%q, want %q", storage.MetaChecksum, f.putMeta[storage.MetaChecksum], wantCRC)
				}
				return
			}
			var ie *storage.IntegrityError
			if !errors.As(err, &ie) || ie.Attempts != storage.IntegritySends || !errors.Is(err, storage.ErrIntegrity) {
				t.Fatalf("err = %v, want an *IntegrityError after %d attempts", err, storage.IntegritySends)
			}
			if !storage.IsPermanent(err) {
				t.Errorf("IsPermanent(%v) = false: a path that corrupts every send must not be retried for hours", err)
			}
		})
	}
}

// TestPutRefusesBytesThatDoNotMatchTheirChecksum: a Put whose metadata
// already records a MetaChecksum (a copy's source's) stores nothing when
// the body does not match it, and the error is not permanent (the next
// attempt reads the source again).
func TestPutRefusesBytesThatDoNotMatchTheirChecksum(t *testing.T) {
	t.Parallel()
	f := &fakeS3{}
	s := integrityStorage(t, storage.ProviderGeneric, f)
	want := storage.ChecksumOf([]byte("what the source recorded")).String()
	_, err := s.Put(context.Background(), "k", bytes.NewReader([]byte("what was read")), &storage.PutOptions{Metadata: map[string]string{storage.MetaChecksum: want}})
	if !errors.Is(err, storage.ErrIntegrity) || storage.IsPermanent(err) {
		t.Fatalf("err = %v, want a retryable integrity error", err)
	}
	if f.sends != 0 {
		t.Errorf("PutObject was sent %d times with bytes that do not match their checksum", f.sends)
	}
}
