package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"iter"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// StoredFile describes a stored object. LastModified comes from the server,
// never from the local clock; ETag has its quotes removed.
type StoredFile struct {
	Key          string            `json:"key"`
	Size         int64             `json:"size"`
	ETag         string            `json:"etag,omitempty"`
	LastModified time.Time         `json:"last_modified"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	// Headers come from Info and reads; a listing has none.
	Headers
	// Encryption is the server-side encryption HEAD reported ("AES256",
	// "aws:kms", "SSE-C"), empty when none or unknown (listings). With KMS
	// or SSE-C the ETag is not the MD5 of the bytes.
	Encryption string `json:"encryption,omitempty"`
	// Checksum is the CRC32C of the whole object (Checksum.String) when
	// known: recorded in its MetaChecksum metadata, reported by the server
	// as a full-object CRC32C (AWS), or, in what an upload returns,
	// combined from the parts the server verified. Empty when unknown
	// (listings, objects not written by ferry).
	Checksum string `json:"checksum,omitempty"`
}

// storedChecksum is what an object records about its bytes: ferry's
// metadata, else the server's own full-object CRC32C.
func storedChecksum(meta map[string]string, crc32c *string, typ types.ChecksumType) string {
	if v := meta[MetaChecksum]; v != "" {
		return v
	}
	if crc32c != nil && typ == types.ChecksumTypeFullObject {
		return *crc32c
	}
	return ""
}

// ETagIsMD5 reports whether f's ETag can be compared as the MD5 of its
// bytes: not a multipart "-N" ETag, and not KMS or customer-key encrypted.
func (f StoredFile) ETagIsMD5() bool {
	if f.ETag == "" || strings.Contains(f.ETag, "-") {
		return false
	}
	return f.Encryption == "" || f.Encryption == "AES256"
}

// S3 is a storage on one bucket of one Client, with the profile's prefix.
// It is safe for concurrent use.
type S3 struct {
	c          *Client
	bucket     string
	prefix     string
	ownsClient bool
}

// Bucket returns the bucket name.
func (s *S3) Bucket() string { return s.bucket }

// Client returns the profile client the storage runs on.
func (s *S3) Client() *Client { return s.c }

func (s *S3) api() (S3API, error) {
	if s.c.closed.Load() {
		return nil, ErrClosed
	}
	return s.c.api, nil
}

// PutOptions are optional settings of Put.
type PutOptions struct {
	// Headers to store with the object; the server picks the Content-Type
	// when it is empty.
	Headers
	Metadata map[string]string
	// IfNotExists makes the write fail with ErrExists when the key exists
	// (If-None-Match: *), where the server supports it.
	IfNotExists bool
}

// Put stores body at key with one PutObject. body should be seekable
// (bytes.Reader, *os.File) so the SDK can sign and retry it; a stream of
// unknown length belongs in PutLarge, which bounds memory.
//
// With integrity on (the default) Put reads body once to hash it, sends
// the hash for the server to verify (Content-MD5, or CRC32C on AWS), sends
// again from the start of body when the server rejects the bytes as
// corrupt (up to IntegritySends times), and records the CRC32C in the
// object's MetaChecksum metadata. When opts.Metadata already holds a
// MetaChecksum (what a copy's source recorded) and body does not match it,
// Put stores nothing and fails with an *IntegrityError.
func (s *S3) Put(ctx context.Context, key string, body io.Reader, opts *PutOptions) (StoredFile, error) {
	api, full, err := s.prepare(key)
	if err != nil {
		return StoredFile{}, err
	}
	if opts == nil {
		opts = &PutOptions{}
	}
	in := &s3.PutObjectInput{Bucket: &s.bucket, Key: &full, Body: body, Metadata: opts.Metadata}
	optFns := opts.Headers.setOn(&in.ContentType, &in.ContentEncoding, &in.ContentDisposition, &in.CacheControl, &in.ContentLanguage, &in.Expires)
	if opts.IfNotExists {
		in.IfNoneMatch = aws.String("*")
	}
	size := int64(-1)
	if l, ok := body.(interface{ Len() int }); ok {
		size = int64(l.Len()) // before the SDK reads it
	}
	var rewind func() error
	if s.c.cfg.integrity() {
		if rewind, size, err = s.signBody(key, in); err != nil {
			return StoredFile{}, err
		}
	}
	out, err := api.PutObject(ctx, in, optFns...)
	for attempt := 1; err != nil && rewind != nil; attempt++ {
		err = translate("put "+s.display(key), opObject, err)
		if !errors.Is(err, ErrIntegrity) {
			break
		}
		if attempt == IntegritySends {
			return StoredFile{}, &IntegrityError{Op: "put " + s.display(key), Check: s.c.sendCheck(), Attempts: attempt, Err: serverAnswer(err)}
		}
		if err = rewind(); err != nil {
			return StoredFile{}, fmt.Errorf("put %s: read the body again: %w", s.display(key), err)
		}
		out, err = api.PutObject(ctx, in, optFns...)
	}
	if err != nil {
		if rewind == nil {
			err = translate("put "+s.display(key), opObject, err)
		}
		return StoredFile{}, err
	}
	// The answer has the ETag and the server's Date, which is the object's
	// LastModified (both have second precision): no HEAD needed when the
	// size is known too.
	date := serverDate(out.ResultMetadata)
	if size < 0 || date.IsZero() {
		return s.Info(ctx, key)
	}
	return StoredFile{Key: key, Size: size, Headers: opts.Headers, ETag: unquote(aws.ToString(out.ETag)),
		LastModified: date, Metadata: maps.Clone(in.Metadata), Encryption: encryption(out.ServerSideEncryption, out.SSECustomerAlgorithm),
		Checksum: in.Metadata[MetaChecksum]}, nil
}

// signBody hashes the body of a PutObject from where it stands, sets the
// header the server verifies and the MetaChecksum metadata (refusing a body
// that does not match one already there), and returns how to rewind the
// body for another send, and its size. A body that cannot seek is read into
// memory (Put is for objects of at most a part).
func (s *S3) signBody(key string, in *s3.PutObjectInput) (rewind func() error, size int64, err error) {
	rs, ok := in.Body.(io.ReadSeeker)
	if !ok {
		b, err := io.ReadAll(in.Body)
		if err != nil {
			return nil, 0, fmt.Errorf("put %s: read body: %w", s.display(key), err)
		}
		rs = bytes.NewReader(b)
		in.Body = rs
	}
	start, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, 0, fmt.Errorf("put %s: body: %w", s.display(key), err)
	}
	crc := crc32.New(castagnoli)
	h := md5.New()
	w := io.Writer(crc)
	if !s.c.quirks.crc32cHeader {
		w = io.MultiWriter(crc, h)
	}
	size, err = io.Copy(w, rs)
	if err != nil {
		return nil, 0, fmt.Errorf("put %s: read body: %w", s.display(key), err)
	}
	rewind = func() error { _, err := rs.Seek(start, io.SeekStart); return err }
	if err := rewind(); err != nil {
		return nil, 0, fmt.Errorf("put %s: body: %w", s.display(key), err)
	}
	sum := Checksum{CRC: crc.Sum32(), Size: size}.String()
	if want := in.Metadata[MetaChecksum]; want != "" && want != sum {
		return nil, 0, &IntegrityError{Op: "put " + s.display(key), Check: MetaChecksum, Want: want, Got: sum}
	}
	in.Metadata = maps.Clone(in.Metadata)
	if in.Metadata == nil {
		in.Metadata = map[string]string{}
	}
	in.Metadata[MetaChecksum] = sum
	if s.c.quirks.crc32cHeader {
		in.ChecksumCRC32C = &sum
	} else {
		in.ContentMD5 = aws.String(base64.StdEncoding.EncodeToString(h.Sum(nil)))
	}
	return rewind, size, nil
}

// encryption names an object's server-side encryption for StoredFile.
func encryption(sse types.ServerSideEncryption, customerAlgorithm *string) string {
	if customerAlgorithm != nil {
		return "SSE-C"
	}
	return string(sse)
}

// serverDate reads the Date header of an SDK answer; zero when absent.
func serverDate(md middleware.Metadata) time.Time {
	raw, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response)
	if !ok || raw == nil {
		return time.Time{}
	}
	t, err := http.ParseTime(raw.Header.Get("Date"))
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// ServerTime is the server's clock now, from the Date header of a HEAD of
// the bucket (second precision, rounded down): the clock an object's
// LastModified comes from, for comparisons the worker's own clock, which
// may be skewed, must not decide. It is zero when the answer has no Date.
func (s *S3) ServerTime(ctx context.Context) (time.Time, error) {
	api, err := s.api()
	if err != nil {
		return time.Time{}, err
	}
	out, err := api.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	if err != nil {
		return time.Time{}, translate("bucket "+s.bucket, opBucket, err)
	}
	return serverDate(out.ResultMetadata), nil
}

// PutBytes stores data at key.
func (s *S3) PutBytes(ctx context.Context, key string, data []byte, opts *PutOptions) (StoredFile, error) {
	return s.Put(ctx, key, bytes.NewReader(data), opts)
}

// Get streams the object. The caller closes the reader.
//
// With integrity on (the default) the bytes are verified as they are read
// when the object says what they must be: its recorded CRC32C (MetaChecksum
// metadata, or the server's full-object CRC32C on AWS), else its ETag when
// that is the MD5 of its bytes (a single-part object, not KMS or SSE-C
// encrypted) or a multipart ETag ferry can recompute (ETagCheck: Get then
// HEADs each part first to learn where it ends). The Read that reaches
// the end then returns an *IntegrityError (ErrIntegrity) instead of io.EOF
// when they differ, so a caller must read to io.EOF and check the error
// before trusting the bytes. An object with none of these (a multipart
// upload on a server that does not tell its part sizes) is not verified.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, f, err := s.GetRange(ctx, key, 0, -1)
	if err != nil {
		return nil, err
	}
	if !s.c.cfg.integrity() {
		return rc, nil
	}
	v := &verifyReader{rc: rc, op: "read " + s.display(f.Key), size: f.Size}
	if f.Checksum != "" {
		v.check, v.want = MetaChecksum, f.Checksum
		return v, nil
	}
	check, _, err := s.ETagCheck(ctx, f)
	if err != nil {
		rc.Close()
		return nil, err
	}
	if check == nil {
		return rc, nil
	}
	v.etag = check.NewHash()
	return v, nil
}

// verifyReader computes the checksum of what it reads and compares it with
// want (a CRC32C) or the object's ETag at the end: see Get.
type verifyReader struct {
	rc        io.ReadCloser
	op, check string
	size      int64
	want      string
	crc       Checksum
	etag      *ETagHash // set when the ETag is the check
	failed    error
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.failed != nil {
		return 0, v.failed
	}
	n, err := v.rc.Read(p)
	v.crc = v.crc.Update(p[:n])
	if v.etag != nil {
		_, _ = v.etag.Write(p[:n])
	}
	if err == io.EOF {
		switch {
		case v.crc.Size != v.size:
			v.failed = fmt.Errorf("%s: the body ended after %d of %d bytes", v.op, v.crc.Size, v.size)
		case v.etag != nil:
			v.failed = v.etag.Verify(v.op)
		case v.crc.String() != v.want:
			v.failed = &IntegrityError{Op: v.op, Check: v.check, Want: v.want, Got: v.crc.String()}
		}
		if v.failed != nil {
			return n, v.failed
		}
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.rc.Close() }

// GetRange streams length bytes from offset (length < 0: to the end) and
// returns the object's metadata as the GET saw it (Size is the whole object's).
func (s *S3) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, StoredFile, error) {
	return s.GetRangeIfMatch(ctx, key, "", offset, length)
}

// GetRangeIfMatch is GetRange pinned to one version of the object: when etag
// is not empty and the object's ETag differs, it fails with
// ErrSourceChanged, so a transfer read part by part never mixes versions.
func (s *S3) GetRangeIfMatch(ctx context.Context, key, etag string, offset, length int64) (io.ReadCloser, StoredFile, error) {
	api, full, err := s.prepare(key)
	if err != nil {
		return nil, StoredFile{}, err
	}
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: &full}
	if offset > 0 || length >= 0 {
		r := fmt.Sprintf("bytes=%d-", offset)
		if length >= 0 {
			r = fmt.Sprintf("bytes=%d-%d", offset, offset+length-1)
		}
		in.Range = &r
	}
	if in.Range == nil && s.c.cfg.integrity() && s.c.quirks.crc32cHeader {
		// The server's full-object CRC32C, for Get to check.
		in.ChecksumMode = types.ChecksumModeEnabled
	}
	kind := opObject
	if etag != "" {
		in.IfMatch = aws.String(`"` + etag + `"`)
		kind = opSource
	}
	out, err := api.GetObject(ctx, in)
	if err != nil {
		return nil, StoredFile{}, translate("get "+s.display(key), kind, err)
	}
	f := StoredFile{Key: key, Size: aws.ToInt64(out.ContentLength),
		Headers: headersFrom(out.ContentType, out.ContentEncoding, out.ContentDisposition, out.CacheControl, out.ContentLanguage, out.ExpiresString),
		ETag:    unquote(aws.ToString(out.ETag)), LastModified: aws.ToTime(out.LastModified), Metadata: out.Metadata,
		Encryption: encryption(out.ServerSideEncryption, out.SSECustomerAlgorithm),
		Checksum:   storedChecksum(out.Metadata, out.ChecksumCRC32C, out.ChecksumType)}
	if cr := aws.ToString(out.ContentRange); cr != "" {
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			var total int64
			if _, err := fmt.Sscan(cr[i+1:], &total); err == nil {
				f.Size = total
			}
		}
	}
	return out.Body, f, nil
}

// GetBytes reads the whole object into memory. Use Get for large objects.
// The bytes are verified as Get describes: a mismatch returns no bytes and
// an *IntegrityError.
func (s *S3) GetBytes(ctx context.Context, key string) ([]byte, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.display(key), err)
	}
	return b, nil
}

// Delete removes key. Deleting a missing key succeeds (S3 semantics).
func (s *S3) Delete(ctx context.Context, key string) error {
	api, full, err := s.prepare(key)
	if err != nil {
		return err
	}
	_, err = api.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &full})
	if err != nil {
		err = translate("delete "+s.display(key), opObject, err)
		if errors.Is(err, ErrNotFound) && !errors.Is(err, ErrBucketNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// DeleteMany deletes keys with DeleteObjects, 1000 per request, and returns
// how many were deleted. Missing keys count as deleted.
func (s *S3) DeleteMany(ctx context.Context, keys []string) (int, error) {
	api, err := s.api()
	if err != nil {
		return 0, err
	}
	done := 0
	for start := 0; start < len(keys); start += 1000 {
		batch := keys[start:min(start+1000, len(keys))]
		ids := make([]types.ObjectIdentifier, 0, len(batch))
		for _, k := range batch {
			full, err := s.fullKey(k)
			if err != nil {
				return done, err
			}
			ids = append(ids, types.ObjectIdentifier{Key: aws.String(full)})
		}
		out, err := api.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &s.bucket,
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		if err != nil {
			return done, translate(fmt.Sprintf("delete %d objects in %s", len(ids), s.bucket), opObject, err)
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return done, fmt.Errorf("delete %s: %s: %s (and %d more failures)",
				s.display(s.relKey(aws.ToString(e.Key))), aws.ToString(e.Code), aws.ToString(e.Message), len(out.Errors)-1)
		}
		done += len(batch)
	}
	return done, nil
}

// DeleteIfUnchanged deletes each of files (as a listing returned them) only
// if the object at its key is still the version listed — the same ETag
// and, where files carry it, no LastModified later by more than a second
// (an object written again with the same bytes is a live one; see
// rewrittenSince) — and returns how many it deleted and the keys it kept because they
// changed or are gone. It is for deleting what a comparison of listings
// found while others may write at the same keys.
//
// Where DeleteObjects honours per-object ETags (AWS) it sends them, 1000
// objects per request. Elsewhere it HEADs each object and compares the
// ETag right before deleting it, then deletes with If-Match where the
// server honours it (AWS, versitygw, Ceph), so no window is left; where it
// does not (MinIO ignores If-Match on DELETE; R2, B2 and Spaces do not
// document it; a generic server may ignore it) a write landing between the
// HEAD and the DELETE is still deleted. The LastModified check is the HEAD's: the
// bulk AWS path conditions on the ETag only (DeleteObjects' LastModifiedTime
// condition is for directory buckets), so there a same-bytes rewrite after
// the listing can still be deleted.
func (s *S3) DeleteIfUnchanged(ctx context.Context, files []StoredFile) (deleted int, changed []string, err error) {
	if s.c.quirks.bulkDeleteIfMatch {
		return s.deleteManyIfMatch(ctx, files)
	}
	for _, f := range files {
		o, err := s.deleteOneIfMatch(ctx, f)
		if err != nil {
			return deleted, changed, err
		}
		if o == versionDeleted {
			deleted++
		} else {
			changed = append(changed, f.Key)
		}
	}
	return deleted, changed, nil
}

// DeleteVersion deletes f.Key only while it holds the version f, as read
// earlier, and tells why it did not: a key written again since is kept and
// reported changed; a key gone already is not changed (the version read is
// gone either way). A move deletes its source so: a delete by key would
// destroy a newer version its copy does not hold.
//
// What it compares is DeleteIfUnchanged's, for one object: a HEAD's ETag
// and LastModified (a rewrite of the same bytes more than about two seconds
// later counts as changed), then a DELETE with If-Match where the provider
// honours it (AWS, versitygw, generic). Elsewhere (MinIO, R2, B2, Spaces) a
// write between the HEAD and the DELETE is not seen: that window is the
// two requests' round trips.
func (s *S3) DeleteVersion(ctx context.Context, f StoredFile) (changed bool, err error) {
	// Not DeleteIfUnchanged's bulk path (AWS): DeleteObjects conditions
	// on the ETag only, and a rewrite of the same bytes has the same one.
	o, err := s.deleteOneIfMatch(ctx, f)
	return o == versionChanged, err
}

// versionOutcome is what deleteOneIfMatch did with the version it was
// given.
type versionOutcome int

const (
	versionDeleted versionOutcome = iota
	versionChanged                // the key holds another version: kept
	versionGone                   // nothing at the key
)

// deleteOneIfMatch deletes f.Key if it still holds the version f (its
// ETag, no later rewrite), and says which it found otherwise.
func (s *S3) deleteOneIfMatch(ctx context.Context, f StoredFile) (versionOutcome, error) {
	cur, err := s.Info(ctx, f.Key)
	if errors.Is(err, ErrNotFound) && !errors.Is(err, ErrBucketNotFound) {
		return versionGone, nil
	}
	if err != nil {
		return versionChanged, err
	}
	if cur.ETag != f.ETag || rewrittenSince(f, cur) {
		return versionChanged, nil
	}
	api, full, err := s.prepare(f.Key)
	if err != nil {
		return versionChanged, err
	}
	in := &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &full}
	if s.c.quirks.deleteIfMatch {
		in.IfMatch = aws.String(`"` + f.ETag + `"`)
	}
	if _, err := api.DeleteObject(ctx, in); err != nil {
		err = translate("delete "+s.display(f.Key), opObject, err)
		switch {
		case errors.Is(err, ErrExists):
			return versionChanged, nil // 412: another version now
		case errors.Is(err, ErrNotFound) && !errors.Is(err, ErrBucketNotFound):
			// AWS answers NoSuchKey to If-Match on a missing key.
			return versionGone, nil
		}
		return versionChanged, err
	}
	return versionDeleted, nil
}

// rewrittenSince reports whether cur, as a HEAD sees it now, was written
// after listed was listed: an object written again with the same bytes has
// the same ETag but a later LastModified. A HEAD's LastModified has
// one-second resolution, a listing's milliseconds, and a StoredFile from a
// Put carries the response's Date, which some servers (versitygw) send up
// to a second late: so both are compared to the second with a second of
// slack, and a rewrite within about two seconds of the listed version is
// not seen.
func rewrittenSince(listed, cur StoredFile) bool {
	if listed.LastModified.IsZero() || cur.LastModified.IsZero() {
		return false
	}
	return cur.LastModified.Truncate(time.Second).After(listed.LastModified.Truncate(time.Second).Add(time.Second))
}

// deleteManyIfMatch is DeleteIfUnchanged through DeleteObjects with each
// object's ETag.
func (s *S3) deleteManyIfMatch(ctx context.Context, files []StoredFile) (deleted int, changed []string, err error) {
	api, err := s.api()
	if err != nil {
		return 0, nil, err
	}
	for start := 0; start < len(files); start += 1000 {
		batch := files[start:min(start+1000, len(files))]
		ids := make([]types.ObjectIdentifier, 0, len(batch))
		for _, f := range batch {
			full, err := s.fullKey(f.Key)
			if err != nil {
				return deleted, changed, err
			}
			ids = append(ids, types.ObjectIdentifier{Key: aws.String(full), ETag: aws.String(`"` + f.ETag + `"`)})
		}
		out, err := api.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &s.bucket,
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		if err != nil {
			return deleted, changed, translate(fmt.Sprintf("delete %d objects in %s", len(ids), s.bucket), opObject, err)
		}
		var failed []types.Error
		for _, e := range out.Errors {
			switch aws.ToString(e.Code) {
			case "PreconditionFailed", "NoSuchKey":
				changed = append(changed, s.relKey(aws.ToString(e.Key)))
			default:
				failed = append(failed, e)
			}
		}
		deleted += len(batch) - len(out.Errors)
		if len(failed) > 0 {
			e := failed[0]
			return deleted, changed, fmt.Errorf("delete %s: %s: %s (and %d more failures)",
				s.display(s.relKey(aws.ToString(e.Key))), aws.ToString(e.Code), aws.ToString(e.Message), len(failed)-1)
		}
	}
	return deleted, changed, nil
}

// Exists reports whether key exists. It is false only when the server says
// not found; any other failure (denied, unreachable) is an error — unlike
// the seed, which answered false on auth errors.
func (s *S3) Exists(ctx context.Context, key string) (bool, error) {
	_, err := s.Info(ctx, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound) && !errors.Is(err, ErrBucketNotFound):
		return false, nil
	}
	return false, err
}

// Info returns the object's metadata (HEAD).
func (s *S3) Info(ctx context.Context, key string) (StoredFile, error) {
	api, full, err := s.prepare(key)
	if err != nil {
		return StoredFile{}, err
	}
	in := &s3.HeadObjectInput{Bucket: &s.bucket, Key: &full}
	if s.c.cfg.integrity() && s.c.quirks.crc32cHeader {
		in.ChecksumMode = types.ChecksumModeEnabled
	}
	out, err := api.HeadObject(ctx, in)
	if err != nil {
		err = translate("info "+s.display(key), opObject, err)
		// A HEAD answer has no body, so a missing bucket looks like a
		// missing key; ask the bucket so Exists never says a plain false
		// for a bucket that is not there.
		if errors.Is(err, ErrNotFound) {
			if _, berr := api.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket}); berr != nil {
				if berr = translate("bucket "+s.bucket, opBucket, berr); errors.Is(berr, ErrBucketNotFound) {
					return StoredFile{}, fmt.Errorf("info %s: %w", s.display(key), berr)
				}
			}
		}
		return StoredFile{}, err
	}
	return StoredFile{Key: key, Size: aws.ToInt64(out.ContentLength),
		Headers: headersFrom(out.ContentType, out.ContentEncoding, out.ContentDisposition, out.CacheControl, out.ContentLanguage, out.ExpiresString),
		ETag:    unquote(aws.ToString(out.ETag)), LastModified: aws.ToTime(out.LastModified),
		Metadata: maps.Clone(out.Metadata), Encryption: encryption(out.ServerSideEncryption, out.SSECustomerAlgorithm),
		Checksum: storedChecksum(out.Metadata, out.ChecksumCRC32C, out.ChecksumType)}, nil
}

// List yields the objects under prefix in key order, paging transparently;
// limit <= 0 means all. Keys are relative to the storage's prefix. List
// results carry no ContentType or Metadata (S3's listing has none).
//
// List checks what callers build on: every key starts with the prefix and
// is greater than the one before (and than ListAfter's startAfter), and a
// page marked truncated carries a continuation token. A listing that
// breaks one of these ends with an error wrapping ErrListingInconsistent,
// never by silently stopping or yielding the key.
func (s *S3) List(ctx context.Context, prefix string, limit int) iter.Seq2[StoredFile, error] {
	return s.ListAfter(ctx, prefix, "", limit)
}

// ListAfter is List starting after the key startAfter (relative to the
// storage prefix; "" starts at the beginning): a listing cursor that a
// caller can checkpoint and resume from.
func (s *S3) ListAfter(ctx context.Context, prefix, startAfter string, limit int) iter.Seq2[StoredFile, error] {
	return func(yield func(StoredFile, error) bool) {
		api, err := s.api()
		if err != nil {
			yield(StoredFile{}, err)
			return
		}
		full, err := s.fullPrefix(prefix)
		if err != nil {
			yield(StoredFile{}, err)
			return
		}
		in := &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &full}
		if startAfter != "" {
			in.StartAfter = aws.String(s.prefix + startAfter)
		}
		n, last := 0, aws.ToString(in.StartAfter)
		inconsistent := func(format string, args ...any) {
			yield(StoredFile{}, fmt.Errorf("list %s: %w: %s", s.display(prefix), ErrListingInconsistent, fmt.Sprintf(format, args...)))
		}
		for {
			if limit > 0 {
				in.MaxKeys = aws.Int32(int32(min(1000, limit-n)))
			}
			out, err := api.ListObjectsV2(ctx, in)
			if err != nil {
				yield(StoredFile{}, translate("list "+s.display(prefix), opBucket, err))
				return
			}
			for _, o := range out.Contents {
				key := aws.ToString(o.Key)
				switch {
				case !strings.HasPrefix(key, full):
					inconsistent("the server returned key %q, outside the prefix %q", key, full)
					return
				case key <= last:
					inconsistent("keys are not strictly increasing: %q came after %q", key, last)
					return
				}
				last = key
				f := StoredFile{Key: s.relKey(key), Size: aws.ToInt64(o.Size),
					ETag: unquote(aws.ToString(o.ETag)), LastModified: aws.ToTime(o.LastModified)}
				if !yield(f, nil) {
					return
				}
				n++
				if limit > 0 && n >= limit {
					return
				}
			}
			if !aws.ToBool(out.IsTruncated) {
				return
			}
			if aws.ToString(out.NextContinuationToken) == "" {
				inconsistent("a page marked truncated has no continuation token, so the rest cannot be listed")
				return
			}
			in.ContinuationToken = out.NextContinuationToken
		}
	}
}

// URLOptions are optional settings of URL.
type URLOptions struct {
	// Expires: zero means the Config's PresignedExpiry (default 1h); at most 7 days.
	Expires time.Duration
	// Method is GET (default) or PUT (a direct client upload).
	Method string
	// ContentType binds a PUT URL to this content type.
	ContentType string
}

// URL returns a presigned URL for key.
func (s *S3) URL(ctx context.Context, key string, opts *URLOptions) (string, error) {
	if s.c.presign == nil {
		return "", errors.New("url: this client has no presigner (built with NewClientWithAPI)")
	}
	full, err := s.fullKey(key)
	if err != nil {
		return "", err
	}
	if opts == nil {
		opts = &URLOptions{}
	}
	exp := opts.Expires
	if exp == 0 {
		exp = s.c.cfg.presignedExpiry()
	}
	if exp < time.Second || exp > MaxPresignedExpiry {
		return "", &ConfigError{Field: "expires", Reason: fmt.Sprintf("%s is out of range: presigned URLs last 1s to 168h (7 days)", exp)}
	}
	with := func(o *s3.PresignOptions) { o.Expires = exp }
	switch strings.ToUpper(opts.Method) {
	case "", http.MethodGet:
		req, err := s.c.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &full}, with)
		if err != nil {
			return "", fmt.Errorf("presign GET %s: %w", s.display(key), err)
		}
		return req.URL, nil
	case http.MethodPut:
		in := &s3.PutObjectInput{Bucket: &s.bucket, Key: &full}
		if opts.ContentType != "" {
			in.ContentType = &opts.ContentType
		}
		req, err := s.c.presign.PresignPutObject(ctx, in, with)
		if err != nil {
			return "", fmt.Errorf("presign PUT %s: %w", s.display(key), err)
		}
		return req.URL, nil
	}
	return "", &ConfigError{Field: "method", Reason: fmt.Sprintf("%q is not supported: use GET or PUT", opts.Method)}
}

// Close releases the storage. It closes the client only when New made it.
func (s *S3) Close() error {
	if s.ownsClient {
		return s.c.Close()
	}
	return nil
}

// display names an object for messages: s3://bucket/prefix+key.
func (s *S3) display(key string) string { return "s3://" + s.bucket + "/" + s.prefix + key }

func unquote(etag string) string { return strings.Trim(etag, "\"") }

// partHeadConcurrency bounds the HEADs partSizes runs at once.
const partHeadConcurrency = 8

// partSizes learns the sizes of the n parts f was uploaded in, from
// HeadObject with partNumber (its Content-Length is the part's, and it
// reports the object's parts count), each pinned to f's ETag. It returns
// nil and why when the server does not tell: it ignores partNumber (no
// parts count), its count disagrees with the ETag's, or the sizes do not
// add up to the object's. A changed source is ErrSourceChanged.
func (s *S3) partSizes(ctx context.Context, f StoredFile, n int) ([]int64, string, error) {
	api, full, err := s.prepare(f.Key)
	if err != nil {
		return nil, "", err
	}
	// The caller may hold a GET's body open on this client (see slotHeld).
	ctx = withSlotHeld(ctx)
	sizes := make([]int64, n)
	count := make([]int32, n)
	unsupported := errors.New("partNumber refused")
	head := func(ctx context.Context, i int) error {
		out, err := api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &full,
			PartNumber: aws.Int32(int32(i + 1)), IfMatch: aws.String(`"` + f.ETag + `"`)})
		if err != nil {
			err = translate(fmt.Sprintf("info %s part %d", s.display(f.Key), i+1), opSource, err)
			var re *smithyhttp.ResponseError
			if errors.As(err, &re) && (re.HTTPStatusCode() == http.StatusBadRequest || re.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable) {
				// InvalidPartNumber, InvalidArgument: a server that has no
				// parts to tell, not a failure of the transfer.
				return fmt.Errorf("%w: %w", unsupported, err)
			}
			return err
		}
		sizes[i], count[i] = aws.ToInt64(out.ContentLength), aws.ToInt32(out.PartsCount)
		return nil
	}
	// Part 1 first: a server that ignores partNumber is known after one
	// request instead of n.
	err = head(ctx, 0)
	if err == nil && int(count[0]) == n {
		err = forEachPart(ctx, n, partHeadConcurrency, head)
	}
	switch {
	case errors.Is(err, unsupported):
		return nil, fmt.Sprintf("the server refuses HeadObject with partNumber (%v), so where its parts end is unknown", err), nil
	case err != nil:
		return nil, "", err
	}
	var total int64
	for i := range n {
		if int(count[i]) != n || sizes[i] <= 0 {
			return nil, fmt.Sprintf("the server does not tell its parts: HeadObject with partNumber=%d reports %d parts (the ETag says %d) and %d bytes", i+1, count[i], n, sizes[i]), nil
		}
		total += sizes[i]
	}
	if total != f.Size {
		return nil, fmt.Sprintf("its %d parts add up to %d bytes, the object has %d", n, total, f.Size), nil
	}
	return sizes, "", nil
}

// forEachPart runs fn for parts 1..n-1 (indices; part 0 is done) with at
// most conc at once, and returns the first error.
func forEachPart(ctx context.Context, n, conc int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(conc, n-1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		}()
	}
	for i := 1; i < n && ctx.Err() == nil; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}
