package storage_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
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

// getS3 serves one object from GetObject, its body optionally with one bit
// flipped on the way (what a faulty middlebox does to a response).
type getS3 struct {
	storage.S3API
	body []byte
	etag string
	meta map[string]string
	flip bool
}

func (g *getS3) GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	b := bytes.Clone(g.body)
	if g.flip {
		b[len(b)/3] ^= 0x10
	}
	return &s3.GetObjectOutput{Body: io.NopCloser(bytes.NewReader(b)), ContentLength: aws.Int64(int64(len(b))),
		ETag: aws.String(`"` + g.etag + `"`), Metadata: g.meta}, nil
}

// TestGetVerifies: Get and GetBytes check the bytes they read against the
// object's recorded CRC32C, else its plain-MD5 ETag: a flipped bit fails
// with ErrIntegrity (not permanent: a retry reads again) and GetBytes
// returns no bytes; an object with neither (a multipart ETag) is read
// unchecked; integrity off checks nothing.
func TestGetVerifies(t *testing.T) {
	t.Parallel()
	body := make([]byte, 100_000)
	for i := range body {
		body[i] = byte(rand.Uint32())
	}
	sum := md5.Sum(body)
	md5hex := hex.EncodeToString(sum[:])
	crc := storage.ChecksumOf(body).String()
	for _, tc := range []struct {
		desc    string
		etag    string
		meta    map[string]string
		flip    bool
		off     bool
		wantErr bool
	}{
		{desc: "recorded CRC32C, intact", etag: "abc-2", meta: map[string]string{storage.MetaChecksum: crc}},
		{desc: "recorded CRC32C, flipped", etag: "abc-2", meta: map[string]string{storage.MetaChecksum: crc}, flip: true, wantErr: true},
		{desc: "recorded CRC32C wins over the ETag", etag: md5hex, meta: map[string]string{storage.MetaChecksum: crc}, flip: true, wantErr: true},
		{desc: "plain MD5 ETag, intact", etag: md5hex},
		{desc: "plain MD5 ETag, flipped", etag: md5hex, flip: true, wantErr: true},
		{desc: "multipart ETag, nothing recorded: unchecked", etag: "abc-2", flip: true},
		{desc: "integrity off: unchecked", etag: md5hex, flip: true, off: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			cfg := storage.Config{Provider: storage.ProviderGeneric, EndpointURL: "https://s3.example"}
			if tc.off {
				cfg.Integrity = aws.Bool(false)
			}
			c, err := storage.NewClientWithAPI(cfg, &getS3{body: body, etag: tc.etag, meta: tc.meta, flip: tc.flip})
			if err != nil {
				t.Fatal(err)
			}
			s, _ := c.Bucket("bucket")
			got, err := s.GetBytes(context.Background(), "k")
			rc, gerr := s.Get(context.Background(), "k")
			if gerr != nil {
				t.Fatal(gerr)
			}
			_, cerr := io.Copy(io.Discard, rc)
			rc.Close()
			if tc.wantErr {
				var ie *storage.IntegrityError
				if !errors.As(err, &ie) || !errors.Is(err, storage.ErrIntegrity) || storage.IsPermanent(err) || got != nil {
					t.Errorf("GetBytes = %d bytes, %v; want no bytes and a non-permanent *IntegrityError", len(got), err)
				}
				if !errors.Is(cerr, storage.ErrIntegrity) {
					t.Errorf("reading Get to the end: %v; want ErrIntegrity", cerr)
				}
				return
			}
			if err != nil || cerr != nil {
				t.Errorf("GetBytes: %v; Get: %v; want no error", err, cerr)
			}
			if !tc.flip && !bytes.Equal(got, body) {
				t.Error("GetBytes returned other bytes")
			}
		})
	}
}
