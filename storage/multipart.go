package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Part is one finished part of a multipart upload.
type Part struct {
	Number int    `json:"number"`
	ETag   string `json:"etag"`
	Size   int64  `json:"size"`
	// Checksum is the part's CRC32C (Checksum.String) as computed from the
	// bytes sent, which the server verified; empty when unknown (integrity
	// off, or a part listed by the server or checkpointed by an older ferry).
	Checksum string `json:"checksum,omitempty"`
}

// MultipartUpload tracks one multipart upload. Parts are kept by number, so
// a retried part replaces the earlier one instead of being listed twice (the
// seed appended duplicates). It is safe for concurrent use.
type MultipartUpload struct {
	Key      string // relative to the storage prefix
	UploadID string
	// PartSize is the size of every part but the last; for a stream whose
	// parts grow (PartsOptions.GrowUpTo) it is the size of the first ones.
	PartSize int64
	// Checksum is what the whole object must be (Checksum.String), as
	// recorded in its MetaChecksum metadata at the start; empty when it was
	// not known then. CompleteMultipartUpload refuses to complete an upload
	// whose parts combine to another value.
	Checksum string

	// noChecksums: created without a checksum algorithm where the
	// provider's uploads have one (StartMultipartUpload's noChecksums), so
	// completed without the parts' checksums.
	noChecksums bool

	mu    sync.Mutex
	parts map[int]Part
}

// NewMultipartUpload describes an upload that already exists on the server,
// e.g. one loaded from a checkpoint, with the parts known to be done.
func NewMultipartUpload(key, uploadID string, partSize int64, parts []Part) *MultipartUpload {
	u := &MultipartUpload{Key: key, UploadID: uploadID, PartSize: partSize, parts: map[int]Part{}}
	for _, p := range parts {
		u.parts[p.Number] = p
	}
	return u
}

// AddPart records a finished part, replacing any earlier one with its number.
func (u *MultipartUpload) AddPart(p Part) {
	u.mu.Lock()
	u.parts[p.Number] = p
	u.mu.Unlock()
}

// Parts returns the finished parts sorted by number.
func (u *MultipartUpload) Parts() []Part {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.SortedFunc(maps.Values(u.parts), func(a, b Part) int { return a.Number - b.Number })
}

// MultipartOptions are optional settings of StartMultipartUpload.
type MultipartOptions struct {
	// Headers the object gets on Complete.
	Headers
	Metadata map[string]string
	// PartSize: zero means DefaultPartSize.
	PartSize int64
	// Tracker, when not nil, is told before the upload is created and once
	// it exists (see UploadTracker); nil tracks nothing.
	Tracker UploadTracker
	// noChecksums creates the upload without a checksum algorithm on a
	// provider that would get CRC32C (a multipart copy: see copyMultipart).
	noChecksums bool
}

// UploadTracker lets a caller keep a registry of the multipart uploads it
// starts, so that it can later tell its own uploads from other
// applications' in a shared bucket, and abort only its own orphans. storage
// calls it around every CreateMultipartUpload it makes for the caller,
// including those inside PutLarge and multipart copies.
type UploadTracker interface {
	// Starting runs before CreateMultipartUpload of key: recording the
	// intent first means a crash between the create and Started cannot
	// leave an upload nobody knows. An error stops before anything exists.
	Starting(ctx context.Context, key string) error
	// Started runs once the upload exists. An error aborts it: an upload
	// its owner could not record is never left behind.
	Started(ctx context.Context, key, uploadID string) error
	// Ended runs after an upload storage itself completes or aborts
	// (PutLarge, multipart copies). A caller of StartMultipartUpload ends
	// its uploads itself.
	Ended(ctx context.Context, key, uploadID string)
}

// DefaultPartSize and DefaultPartConcurrency were chosen from the benchmarks
// in docs/performance.md.
const (
	DefaultPartSize        = 16 << 20
	DefaultPartConcurrency = 4
)

// PartSizeFor returns the smallest part size >= want that fits size in
// MaxParts parts (rounded up to 1 MiB), and at least MinPartSize.
func PartSizeFor(size, want int64) int64 {
	if want <= 0 {
		want = DefaultPartSize
	}
	want = max(want, MinPartSize)
	if size > 0 {
		if need := (size + MaxParts - 1) / MaxParts; need > want {
			want = (need + (1<<20 - 1)) &^ (1<<20 - 1)
		}
	}
	return min(want, MaxPartSize)
}

// Part sizes of a stream of unknown length. Its length is known only at its
// end, so the part size cannot be fitted to it up front as PartSizeFor does;
// the parts grow instead: the first streamGrowEvery parts at the requested
// size, then twice that for the next streamGrowEvery, and so on up to
// streamGrowMax times the requested size (see streamPartLimit). At the 16 MiB
// default that is 16, 32, 64 then 128 MiB parts: a stream below 7.8 GiB
// keeps 16 MiB parts, and 10,000 parts carry 71,500 × 16 MiB ≈ 1.09 TiB.
//
// rclone and the AWS CLI keep one part size for a stream and fail at 10,000
// of them (rclone: 48 GiB at its 5 MiB default; the AWS CLI asks for
// --expected-size above 50 GB); minio-go assumes 5 TiB and uses 512 MiB+
// parts for every stream. Growing keeps small streams cheap and big ones
// possible, within the buffer budget.
//
// Providers that need equal parts (R2) cannot grow: a stream there gets the
// largest part size from the start (streamPartLimit), every part but the
// last equal, which reaches 80,000 × the requested size (1.22 TiB at 16 MiB).
const (
	streamGrowEvery = 500
	streamGrowMax   = 8
)

// streamPartLimit is the largest part of a stream of unknown length whose
// parts start at base and come from a buffer pool of budget bytes:
// streamGrowMax × base, but at most half the budget (so two parts of one
// stream fit in it and a stream never starves the pool by itself) and at
// most MaxPartSize, rounded down to a MiB multiple; never below base.
func streamPartLimit(base, budget int64) int64 {
	limit := min(streamGrowMax*base, budget/2, MaxPartSize) &^ (1<<20 - 1)
	return max(limit, base)
}

// streamPartSize returns the size of part n (1-based) of a stream of unknown
// length whose parts start at base and grow up to limit (see
// streamGrowEvery). The schedule depends only on n, so part sizes never
// shrink.
func streamPartSize(base, limit int64, n int) int64 {
	size := base
	for i := (n - 1) / streamGrowEvery; i > 0 && size < limit; i-- {
		size *= 2
	}
	return min(size, limit)
}

// StartMultipartUpload starts an upload at key.
func (s *S3) StartMultipartUpload(ctx context.Context, key string, opts *MultipartOptions) (*MultipartUpload, error) {
	api, full, err := s.prepare(key)
	if err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &MultipartOptions{}
	}
	ps := opts.PartSize
	if ps == 0 {
		ps = DefaultPartSize
	}
	if ps < MinPartSize || ps > MaxPartSize {
		return nil, &ConfigError{Field: "part_size", Reason: fmt.Sprintf("%d is out of range: S3 parts are 5 MiB to 5 GiB", ps)}
	}
	in := &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &full, Metadata: opts.Metadata}
	optFns := opts.Headers.setOn(&in.ContentType, &in.ContentEncoding, &in.ContentDisposition, &in.CacheControl, &in.ContentLanguage, &in.Expires)
	if s.partChecksums() && !opts.noChecksums {
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32c
		in.ChecksumType = types.ChecksumTypeFullObject
	}
	if opts.Tracker != nil {
		if err := opts.Tracker.Starting(ctx, key); err != nil {
			return nil, fmt.Errorf("start multipart upload %s: %w", s.display(key), err)
		}
	}
	out, err := api.CreateMultipartUpload(ctx, in, optFns...)
	if err != nil {
		return nil, translate("start multipart upload "+s.display(key), opObject, err)
	}
	u := NewMultipartUpload(key, aws.ToString(out.UploadId), ps, nil)
	u.noChecksums = opts.noChecksums
	if opts.Tracker != nil {
		if err := opts.Tracker.Started(ctx, key, u.UploadID); err != nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if aerr := s.AbortMultipartUpload(actx, key, u.UploadID); aerr != nil {
				err = errors.Join(err, aerr)
			}
			return nil, fmt.Errorf("start multipart upload %s: %w", s.display(key), err)
		}
	}
	u.Checksum = opts.Metadata[MetaChecksum]
	return u, nil
}

// IntegritySends is how many times a part, a PutObject or a
// CompleteMultipartUpload is sent when the server rejects its bytes as
// corrupt (BadDigest, XAmzContentSHA256Mismatch); each send of a part or
// object re-reads the bytes from the source when it can. Then the transfer
// fails with an *IntegrityError (a Complete with the server's answer).
const IntegritySends = 4

// uploadPart sends part n, again when the server rejects its bytes as
// corrupt: reread (nil: resend data as it is) fetches the part again from
// the source before each new send.
func (s *S3) uploadPart(ctx context.Context, u *MultipartUpload, n int, data []byte, reread func() ([]byte, error)) (Part, error) {
	for attempt := 1; ; attempt++ {
		p, err := s.sendPart(ctx, u, n, data)
		if err == nil || !errors.Is(err, ErrIntegrity) {
			return p, err
		}
		if attempt == IntegritySends {
			return Part{}, &MultipartUploadError{Key: u.Key, UploadID: u.UploadID, Err: &IntegrityError{
				Op: fmt.Sprintf("upload part %d of %s", n, s.display(u.Key)), Check: s.c.sendCheck(), Attempts: attempt, Err: serverAnswer(err)}}
		}
		if reread != nil {
			if data, err = reread(); err != nil {
				return Part{}, err
			}
		}
	}
}

// sendCheck names the check the server makes on what ferry sends.
func (c *Client) sendCheck() string {
	if c.quirks.crc32cHeader {
		return "x-amz-checksum-crc32c"
	}
	return "Content-MD5"
}

// UploadPart uploads part n (1..10000) of u and records it in u. The part
// carries a checksum of data computed before the SDK sees it (Content-MD5,
// or CRC32C on AWS) that the server verifies; a part it rejects as corrupt
// is sent again, up to IntegritySends times in all.
func (s *S3) UploadPart(ctx context.Context, u *MultipartUpload, n int, data []byte) (Part, error) {
	return s.uploadPart(ctx, u, n, data, nil)
}

// sendPart is one UploadPart request.
func (s *S3) sendPart(ctx context.Context, u *MultipartUpload, n int, data []byte) (Part, error) {
	api, err := s.api()
	if err != nil {
		return Part{}, err
	}
	if n < 1 || n > MaxParts {
		return Part{}, fmt.Errorf("upload part %d of %s: part numbers are 1..%d", n, s.display(u.Key), MaxParts)
	}
	full, err := s.fullKey(u.Key)
	if err != nil {
		return Part{}, err
	}
	in := &s3.UploadPartInput{Bucket: &s.bucket, Key: &full, UploadId: &u.UploadID,
		PartNumber: aws.Int32(int32(n)), Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}
	sum := ""
	if s.c.cfg.integrity() {
		// Computed here, from the bytes as read from the source, before
		// the SDK and the network: the server's check then covers every
		// copy of the bytes after this one.
		sum = ChecksumOf(data).String()
		if s.c.quirks.crc32cHeader {
			in.ChecksumCRC32C = &sum
		} else {
			in.ContentMD5 = aws.String(contentMD5(data))
		}
	}
	out, err := api.UploadPart(ctx, in)
	if err != nil {
		return Part{}, &MultipartUploadError{Key: u.Key, UploadID: u.UploadID,
			Err: translate(fmt.Sprintf("upload part %d of %s", n, s.display(u.Key)), opUpload, err)}
	}
	p := Part{Number: n, ETag: unquote(aws.ToString(out.ETag)), Size: int64(len(data)), Checksum: sum}
	u.AddPart(p)
	return p, nil
}

// ListParts lists the parts the server holds for an upload, following
// pagination (servers page at 1,000 parts).
func (s *S3) ListParts(ctx context.Context, key, uploadID string) ([]Part, error) {
	api, full, err := s.prepare(key)
	if err != nil {
		return nil, err
	}
	var parts []Part
	in := &s3.ListPartsInput{Bucket: &s.bucket, Key: &full, UploadId: &uploadID}
	for {
		out, err := api.ListParts(ctx, in)
		if err != nil {
			return nil, translate(fmt.Sprintf("list parts of upload %s of %s", uploadID, s.display(key)), opUpload, err)
		}
		for _, p := range out.Parts {
			part := Part{Number: int(aws.ToInt32(p.PartNumber)), ETag: unquote(aws.ToString(p.ETag)), Size: aws.ToInt64(p.Size)}
			if s.partChecksums() {
				// The server's CRC32C of the bytes it holds, for an upload
				// created with one (see StartMultipartUpload).
				part.Checksum = aws.ToString(p.ChecksumCRC32C)
			}
			parts = append(parts, part)
		}
		if !aws.ToBool(out.IsTruncated) || out.NextPartNumberMarker == nil {
			break
		}
		in.PartNumberMarker = out.NextPartNumberMarker
	}
	slices.SortFunc(parts, func(a, b Part) int { return a.Number - b.Number })
	return slices.CompactFunc(parts, func(a, b Part) bool { return a.Number == b.Number }), nil
}

// CompleteMultipartUpload completes u with its parts, deduped and sorted by
// number, and returns the object as the server reports it.
func (s *S3) CompleteMultipartUpload(ctx context.Context, u *MultipartUpload) (StoredFile, error) {
	api, full, err := s.prepare(u.Key)
	if err != nil {
		return StoredFile{}, err
	}
	parts := u.Parts()
	// Whether u was created with a CRC32C algorithm, whose Complete must
	// carry every part's checksum and the object's.
	checksums := s.partChecksums() && !u.noChecksums
	if len(parts) == 0 {
		return StoredFile{}, &MultipartUploadError{Key: u.Key, UploadID: u.UploadID, Err: errors.New("complete: no parts were uploaded")}
	}
	if s.c.quirks.equalParts {
		for _, p := range parts[:len(parts)-1] {
			if p.Size != parts[0].Size {
				return StoredFile{}, &MultipartUploadError{Key: u.Key, UploadID: u.UploadID,
					Err: fmt.Errorf("complete: part %d is %d bytes but part 1 is %d; %s needs equal part sizes", p.Number, p.Size, parts[0].Size, s.c.cfg.provider())}
			}
		}
	}
	if checksums && slices.ContainsFunc(parts, func(p Part) bool { return p.Checksum == "" }) {
		// A part recorded without its checksum (by an older ferry, or by a
		// caller that kept only ETags): the server has it.
		if parts, err = s.listedChecksums(ctx, u, parts); err != nil {
			return StoredFile{}, &MultipartUploadError{Key: u.Key, UploadID: u.UploadID, Err: err}
		}
	}
	cp := make([]types.CompletedPart, len(parts))
	for i, p := range parts {
		cp[i] = types.CompletedPart{PartNumber: aws.Int32(int32(p.Number)), ETag: aws.String(`"` + p.ETag + `"`)}
		if checksums {
			// Required: an upload created with a checksum algorithm is
			// completed only with every part's. versitygw answers
			// InvalidRequest otherwise, in AWS's words, which AWS is known
			// to send for COMPOSITE uploads; valid for FULL_OBJECT ones.
			cp[i].ChecksumCRC32C = aws.String(p.Checksum)
		}
	}
	in := &s3.CompleteMultipartUploadInput{Bucket: &s.bucket, Key: &full,
		UploadId: &u.UploadID, MultipartUpload: &types.CompletedMultipartUpload{Parts: cp}}
	sum, known := partsChecksum(parts)
	if s.c.cfg.integrity() && known {
		if u.Checksum != "" && u.Checksum != sum.String() {
			// The bytes read from the source are not what its checksum
			// says: never complete them as the object.
			return StoredFile{}, &MultipartUploadError{Key: u.Key, UploadID: u.UploadID, Err: &IntegrityError{
				Op: "complete upload of " + s.display(u.Key), Check: MetaChecksum, Want: u.Checksum, Got: sum.String()}}
		}
		if checksums {
			in.ChecksumCRC32C = aws.String(sum.String())
			in.ChecksumType = types.ChecksumTypeFullObject
		}
	}
	// The SDK turns a 200 answer with an <Error> body into an error. A
	// Complete whose body arrived corrupted (its payload hash or checksum
	// did not match: BadDigest, XAmzContentSHA256Mismatch) changed nothing
	// on the server and is sent again, as a rejected part is: one flipped
	// bit in the parts list cost the task a whole attempt (TestS3Faults
	// archived a copy so, 2026-12-01).
	for send := 1; ; send++ {
		_, err = api.CompleteMultipartUpload(ctx, in)
		if err == nil {
			break
		}
		err = translate("complete upload of "+s.display(u.Key), opUpload, err)
		if !errors.Is(err, ErrIntegrity) || send == IntegritySends || ctx.Err() != nil {
			return StoredFile{}, &MultipartUploadError{Key: u.Key, UploadID: u.UploadID, Err: err}
		}
	}
	f, err := s.Info(ctx, u.Key)
	if err == nil && f.Checksum == "" && known && s.c.cfg.integrity() {
		// Not in the metadata (unknown when the upload started), but
		// exact: every part's CRC32C was computed from the bytes the
		// server verified.
		f.Checksum = sum.String()
	}
	return f, err
}

// partChecksums reports whether s's multipart uploads are created with a
// CRC32C algorithm (StartMultipartUpload), so that their parts carry
// checksums the server keeps and Complete must repeat.
func (s *S3) partChecksums() bool { return s.c.cfg.integrity() && s.c.quirks.crc32cHeader }

// Checksum modes of a multipart upload (UploadChecksumMode): whether it was
// created with a checksum algorithm, which its parts and its Complete must
// then match.
const (
	// ChecksumModeNone: created without an algorithm; parts carry
	// Content-MD5 (or nothing, integrity off) and Complete no checksums.
	ChecksumModeNone = "none"
	// ChecksumModeCRC32C: created with a FULL_OBJECT CRC32C; every part
	// carries its CRC32C, and Complete every part's and the object's.
	ChecksumModeCRC32C = "crc32c"
)

// UploadChecksumMode is the checksum mode (ChecksumModeNone or
// ChecksumModeCRC32C) of the multipart uploads StartMultipartUpload creates
// on s now, and so the mode s's UploadPart and CompleteMultipartUpload
// speak to an upload they did not create: CRC32C on the AWS and versitygw
// providers with integrity on, none otherwise. A caller that keeps an
// upload across runs records it and starts over when a later s (its
// profile's provider or integrity changed) answers another, since the
// server refuses the other mode's parts or Complete. Multipart copies are
// always created without an algorithm (see copyMultipart): this is not
// their mode.
func (s *S3) UploadChecksumMode() string {
	if s.partChecksums() {
		return ChecksumModeCRC32C
	}
	return ChecksumModeNone
}

// listedChecksums fills in the checksums parts lack from the server's
// listing of u, where the listed part has the same ETag; a part the server
// holds otherwise is an error, as Complete would fail on it.
func (s *S3) listedChecksums(ctx context.Context, u *MultipartUpload, parts []Part) ([]Part, error) {
	listed, err := s.ListParts(ctx, u.Key, u.UploadID)
	if err != nil {
		return nil, fmt.Errorf("complete: the checksums of its parts: %w", err)
	}
	byNumber := make(map[int]Part, len(listed))
	for _, p := range listed {
		byNumber[p.Number] = p
	}
	parts = slices.Clone(parts)
	for i, p := range parts {
		if p.Checksum != "" {
			continue
		}
		l, ok := byNumber[p.Number]
		if !ok || l.ETag != p.ETag || l.Checksum == "" {
			return nil, fmt.Errorf("complete: part %d (ETag %s) has no checksum, and the server lists none for it", p.Number, p.ETag)
		}
		parts[i].Checksum = l.Checksum
	}
	return parts, nil
}

// partsChecksum combines the parts' checksums into the object's; known is
// false when a part's is missing.
func partsChecksum(parts []Part) (sum Checksum, known bool) {
	for _, p := range parts {
		c, err := ParseChecksum(p.Checksum, p.Size)
		if err != nil {
			return Checksum{}, false
		}
		sum = sum.Append(c)
	}
	return sum, true
}

// AbortMultipartUpload aborts an upload and frees its parts. Parts still in
// flight can survive one abort on some servers, so it repeats until ListParts
// finds none. A missing upload counts as aborted.
func (s *S3) AbortMultipartUpload(ctx context.Context, key, uploadID string) error {
	api, full, err := s.prepare(key)
	if err != nil {
		return err
	}
	for attempt := 0; attempt < 5; attempt++ {
		_, err := api.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &full, UploadId: &uploadID})
		if err != nil {
			err = translate(fmt.Sprintf("abort upload %s of %s", uploadID, s.display(key)), opUpload, err)
			if errors.Is(err, ErrUploadNotFound) {
				return nil
			}
			return err
		}
		parts, err := s.ListParts(ctx, key, uploadID)
		if errors.Is(err, ErrNotFound) || (err == nil && len(parts) == 0) {
			return nil
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	return fmt.Errorf("abort upload %s of %s: parts remain after 5 attempts", uploadID, s.display(key))
}

// Upload is an in-progress multipart upload found on the server.
type Upload struct {
	Key       string
	UploadID  string
	Initiated time.Time
}

// ListMultipartUploads lists the uploads in progress under prefix.
func (s *S3) ListMultipartUploads(ctx context.Context, prefix string) ([]Upload, error) {
	api, err := s.api()
	if err != nil {
		return nil, err
	}
	full, err := s.fullPrefix(prefix)
	if err != nil {
		return nil, err
	}
	var ups []Upload
	in := &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: &full}
	for {
		out, err := api.ListMultipartUploads(ctx, in)
		if err != nil {
			return nil, translate("list multipart uploads in "+s.display(prefix), opBucket, err)
		}
		for _, u := range out.Uploads {
			ups = append(ups, Upload{Key: s.relKey(aws.ToString(u.Key)), UploadID: aws.ToString(u.UploadId), Initiated: aws.ToTime(u.Initiated)})
		}
		if !aws.ToBool(out.IsTruncated) {
			return ups, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}
