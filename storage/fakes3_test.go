package storage_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ferryhq/ferry/storage"
)

// countingS3 is a hand-written fake of storage.S3API for fast unit tests of
// the multipart engine, in the style of transfermanager's tests: it records
// the call sequence and the size of every part, and discards part bodies
// without reading them, so terabytes can "upload" in seconds. It checks what
// S3 checks at Complete: part numbers 1..10,000, every part listed and
// sorted, all but the last at least 5 MiB. Methods it does not implement
// panic through the nil embedded interface.
type countingS3 struct {
	storage.S3API

	mu    sync.Mutex
	calls []string
	parts map[int32]int64 // part number → size
	size  int64           // object size after Complete
	// rejectComplete answers that many Completes with
	// XAmzContentSHA256Mismatch, as a server does to a body corrupted in
	// transit.
	rejectComplete int
}

func newCountingS3() *countingS3 { return &countingS3{parts: map[int32]int64{}} }

func (f *countingS3) record(call string) {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mu.Unlock()
}

// sequence returns the calls with runs of one name folded: "UploadPart×10000".
func (f *countingS3) sequence() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for i := 0; i < len(f.calls); {
		j := i
		for j < len(f.calls) && f.calls[j] == f.calls[i] {
			j++
		}
		if j-i == 1 {
			out = append(out, f.calls[i])
		} else {
			out = append(out, fmt.Sprintf("%s×%d", f.calls[i], j-i))
		}
		i = j
	}
	return out
}

// partSizes returns the sizes of parts 1..n in order.
func (f *countingS3) partSizes() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]int64, len(f.parts))
	for n, sz := range f.parts {
		if int(n) <= len(out) {
			out[n-1] = sz
		}
	}
	return out
}

func (f *countingS3) CreateMultipartUpload(context.Context, *s3.CreateMultipartUploadInput, ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	f.record("CreateMultipartUpload")
	return &s3.CreateMultipartUploadOutput{UploadId: aws.String("upload-1")}, nil
}

func (f *countingS3) UploadPart(_ context.Context, in *s3.UploadPartInput, _ ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	f.record("UploadPart")
	n := aws.ToInt32(in.PartNumber)
	if n < 1 || n > storage.MaxParts {
		return nil, fmt.Errorf("fake: part number %d outside 1..%d", n, storage.MaxParts)
	}
	f.mu.Lock()
	f.parts[n] = aws.ToInt64(in.ContentLength)
	f.mu.Unlock()
	return &s3.UploadPartOutput{ETag: aws.String(fmt.Sprintf(`"etag-%d"`, n))}, nil
}

func (f *countingS3) CompleteMultipartUpload(_ context.Context, in *s3.CompleteMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	f.record("CompleteMultipartUpload")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rejectComplete > 0 {
		f.rejectComplete--
		return nil, &smithy.OperationError{ServiceID: "S3", OperationName: "CompleteMultipartUpload", Err: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 400}},
			Err:      &smithy.GenericAPIError{Code: "XAmzContentSHA256Mismatch", Message: "The provided 'x-amz-content-sha256' header does not match what was computed."}}}
	}
	listed := in.MultipartUpload.Parts
	if len(listed) != len(f.parts) {
		return nil, fmt.Errorf("fake: complete lists %d parts, %d were uploaded", len(listed), len(f.parts))
	}
	var total int64
	for i, p := range listed {
		n := aws.ToInt32(p.PartNumber)
		if int(n) != i+1 {
			return nil, fmt.Errorf("fake: complete lists part %d at position %d", n, i+1)
		}
		if want := fmt.Sprintf(`"etag-%d"`, n); aws.ToString(p.ETag) != want {
			return nil, fmt.Errorf("fake: part %d etag %s, want %s", n, aws.ToString(p.ETag), want)
		}
		if i < len(listed)-1 && f.parts[n] < storage.MinPartSize {
			return nil, fmt.Errorf("fake: part %d is %d bytes, below the 5 MiB minimum", n, f.parts[n])
		}
		total += f.parts[n]
	}
	f.size = total
	return &s3.CompleteMultipartUploadOutput{}, nil
}

func (f *countingS3) AbortMultipartUpload(context.Context, *s3.AbortMultipartUploadInput, ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	f.record("AbortMultipartUpload")
	return &s3.AbortMultipartUploadOutput{}, nil
}

func (f *countingS3) ListParts(context.Context, *s3.ListPartsInput, ...func(*s3.Options)) (*s3.ListPartsOutput, error) {
	f.record("ListParts")
	return &s3.ListPartsOutput{}, nil
}

func (f *countingS3) HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	f.record("HeadObject")
	f.mu.Lock()
	defer f.mu.Unlock()
	return &s3.HeadObjectOutput{ContentLength: aws.Int64(f.size), ETag: aws.String(`"multipart-etag"`)}, nil
}

// fakeStorage opens a storage for provider on a fresh countingS3.
func fakeStorage(t *testing.T, provider storage.Provider) (*storage.S3, *countingS3) {
	t.Helper()
	fake := newCountingS3()
	// Integrity off: it hashes every part, and terabytes of parts cannot
	// be hashed in a unit test (checksum_test.go tests integrity).
	c, err := storage.NewClientWithAPI(storage.Config{Provider: provider, EndpointURL: "http://fake.invalid", Region: "us-east-1",
		Integrity: aws.Bool(false)}, fake)
	if err != nil {
		t.Fatalf("NewClientWithAPI: %v", err)
	}
	s, err := c.Bucket("bkt")
	if err != nil {
		t.Fatalf("Bucket: %v", err)
	}
	return s, fake
}

// zeros is a source of n bytes that costs nothing to read: Read and ReadAt
// report bytes without writing them (the buffer keeps whatever it held), so
// a test can stream a terabyte through the engine without touching it.
type zeros struct {
	n   int64 // total length
	off int64 // stream position
	mu  sync.Mutex
}

func (z *zeros) Read(p []byte) (int, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.off >= z.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n-z.off)
	z.off += k
	return int(k), nil
}

func (z *zeros) ReadAt(p []byte, off int64) (int, error) {
	if off >= z.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n-off)
	if k < int64(len(p)) {
		return int(k), io.EOF
	}
	return int(k), nil
}

// onlyReader hides ReadAt, so PutLarge has to stream.
type onlyReader struct{ r *zeros }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func joinSeq(s []string) string { return strings.Join(s, ", ") }
