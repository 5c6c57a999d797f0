package testenv

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// ObjectHeaders are what S3 stores with an object besides its bytes, by
// header name: Content-Type, Content-Encoding, Content-Disposition,
// Cache-Control, Content-Language, Expires, and "x-amz-meta-<name>" for
// each user metadata entry. Tests set and read them with the plain SDK,
// independently of ferry's storage package.
type ObjectHeaders map[string]string

// StoredHeaders sets every stored header and one user metadata entry, each
// to a value no server picks by itself, so a copy that kept them is told
// apart from one that got defaults.
var StoredHeaders = ObjectHeaders{
	"Content-Type":        "text/x-ferry-test",
	"Content-Encoding":    "gzip",
	"Content-Disposition": `attachment; filename="ferry test.txt"`,
	"Cache-Control":       "max-age=60, private",
	"Content-Language":    "fr-CA",
	"Expires":             "Wed, 02 Jan 2030 03:04:05 GMT",
	"x-amz-meta-owner":    "qa team",
}

// PutObject stores body at bucket/key with headers h.
func (s *S3Server) PutObject(t testing.TB, bucket, key string, body []byte, h ObjectHeaders) {
	t.Helper()
	in := &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(body), Metadata: map[string]string{}}
	fields := map[string]**string{"Content-Type": &in.ContentType, "Content-Encoding": &in.ContentEncoding,
		"Content-Disposition": &in.ContentDisposition, "Cache-Control": &in.CacheControl, "Content-Language": &in.ContentLanguage}
	var raw []func(*s3.Options)
	for name, v := range h {
		switch {
		case fields[name] != nil:
			*fields[name] = aws.String(v)
		case name == "Expires":
			// Raw, as given: the SDK would reformat a time.Time.
			raw = append(raw, func(o *s3.Options) {
				o.APIOptions = append(o.APIOptions, smithyhttp.SetHeaderValue("Expires", v))
			})
		case strings.HasPrefix(name, "x-amz-meta-"):
			in.Metadata[strings.TrimPrefix(name, "x-amz-meta-")] = v
		default:
			t.Fatalf("testenv: PutObject: %q is not a stored header", name)
		}
	}
	if _, err := s.Client().PutObject(context.Background(), in, raw...); err != nil {
		t.Fatalf("testenv: put s3://%s/%s: %v", bucket, key, err)
	}
}

// GetObject reads bucket/key with the plain SDK; nil when it does not exist.
func (s *S3Server) GetObject(t testing.TB, bucket, key string) []byte {
	t.Helper()
	out, err := s.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil
	}
	if err != nil {
		t.Fatalf("testenv: get s3://%s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("testenv: read s3://%s/%s: %v", bucket, key, err)
	}
	return b
}

// Headers HEADs bucket/key and returns its stored headers.
func (s *S3Server) Headers(t testing.TB, bucket, key string) ObjectHeaders {
	t.Helper()
	out, err := s.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatalf("testenv: head s3://%s/%s: %v", bucket, key, err)
	}
	h := ObjectHeaders{}
	for name, v := range map[string]*string{"Content-Type": out.ContentType, "Content-Encoding": out.ContentEncoding,
		"Content-Disposition": out.ContentDisposition, "Cache-Control": out.CacheControl,
		"Content-Language": out.ContentLanguage, "Expires": out.ExpiresString} {
		if v != nil && *v != "" {
			h[name] = *v
		}
	}
	for k, v := range out.Metadata {
		h["x-amz-meta-"+strings.ToLower(k)] = v
	}
	return h
}

// CheckHeaders fails t for every header of want that bucket/key does not
// have with the same value (other headers, such as ferry's own metadata,
// may be there too).
func (s *S3Server) CheckHeaders(t testing.TB, bucket, key string, want ObjectHeaders) {
	t.Helper()
	got := s.Headers(t, bucket, key)
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if v := want[name]; got[name] != v {
			t.Errorf("s3://%s/%s: %s is %q, want %q (kept from the source)", bucket, key, name, got[name], v)
		}
	}
}
