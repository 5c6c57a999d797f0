package storage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/ferryhq/ferry/internal/objectid"
)

// CopyOptions are optional settings of Copy and CopyFrom.
type CopyOptions struct {
	// Metadata, when not nil, is merged over the source's metadata. The
	// copy keeps the source's Headers either way.
	Metadata map[string]string
	// Concurrency of UploadPartCopy for objects above the multipart copy
	// threshold; zero means DefaultPartConcurrency.
	Concurrency int
	// Tracker, when not nil, is told of a multipart copy's upload (see
	// UploadTracker), including when it ends.
	Tracker UploadTracker
	// Source, when not nil, is the source's Info the caller has just
	// read: CopyFrom then does not HEAD it again. The copy is of exactly
	// that version (its ETag is the copy's condition) or fails.
	Source *StoredFile
}

// Copy copies srcKey to dstKey in this bucket, server-side.
func (s *S3) Copy(ctx context.Context, srcKey, dstKey string, opts *CopyOptions) (StoredFile, error) {
	return s.CopyFrom(ctx, s, srcKey, dstKey, opts)
}

// CopyFrom copies srcKey of src (another bucket of the same Client: same
// endpoint and credentials) to dstKey here, server-side: CopyObject up to
// the multipart copy threshold (5 GiB), UploadPartCopy above it. The copy
// has the source's Headers and user metadata at every size: a CopyObject
// that replaces metadata, and a multipart upload, get none of them from the
// server, so they are sent from the source's HEAD.
//
// The result is the copy as the server holds it. A CopyObject whose answer
// proves the copy (the ETag of what it stored is the source's plain MD5) is
// not read back: the result is built from the answer and what was sent
// (the source's size, the metadata and headers). Any other copy (a
// multipart one, a source or destination whose ETag is no MD5) is read
// back with a HEAD. Move and MoveFrom read the destination back whatever
// the answer, before they delete the source.
func (s *S3) CopyFrom(ctx context.Context, src *S3, srcKey, dstKey string, opts *CopyOptions) (StoredFile, error) {
	if src.c != s.c {
		return StoredFile{}, errors.New("server-side copy needs both buckets on one profile (endpoint and credentials); stream the object instead")
	}
	api, err := s.api()
	if err != nil {
		return StoredFile{}, err
	}
	if opts == nil {
		opts = &CopyOptions{}
	}
	srcFull, err := src.fullKey(srcKey)
	if err != nil {
		return StoredFile{}, err
	}
	dstFull, err := s.fullKey(dstKey)
	if err != nil {
		return StoredFile{}, err
	}
	var info StoredFile
	if opts.Source != nil {
		info = *opts.Source
	} else if info, err = src.Info(ctx, srcKey); err != nil {
		return StoredFile{}, fmt.Errorf("copy source: %w", err)
	}
	meta := info.Metadata
	if opts.Metadata != nil {
		meta = maps.Clone(info.Metadata)
		if meta == nil {
			meta = map[string]string{}
		}
		maps.Copy(meta, opts.Metadata)
	}
	threshold := s.c.cfg.MultipartCopyThreshold
	if threshold <= 0 {
		threshold = MaxSingleCopySize
	}
	if info.Size > threshold {
		if err := s.copyMultipart(ctx, api, src, srcFull, info, dstKey, meta, opts); err != nil {
			return StoredFile{}, err
		}
		return s.Info(ctx, dstKey)
	}
	in := &s3.CopyObjectInput{Bucket: &s.bucket, Key: &dstFull, CopySource: aws.String(copySource(src.bucket, srcFull)),
		// Copy exactly the version we looked at.
		CopySourceIfMatch: aws.String(`"` + info.ETag + `"`)}
	var optFns []func(*s3.Options)
	if opts.Metadata != nil {
		// REPLACE replaces every header too: send them all.
		in.MetadataDirective = types.MetadataDirectiveReplace
		in.Metadata = meta
		optFns = info.Headers.setOn(&in.ContentType, &in.ContentEncoding, &in.ContentDisposition, &in.CacheControl, &in.ContentLanguage, &in.Expires)
	}
	out, err := api.CopyObject(ctx, in, optFns...)
	if err != nil {
		return StoredFile{}, translate(fmt.Sprintf("copy %s to %s", src.display(srcKey), s.display(dstKey)), opSource, err)
	}
	// The answer proves the bytes when the server's MD5 of what it stored
	// is the source's; what it stored besides is what was sent (REPLACE)
	// or the source's own (COPY), both meta and info.Headers here. Any
	// other answer (a KMS-encrypted copy, no ETag) is checked by a HEAD.
	if f, ok := provenCopy(out, dstKey, info); ok {
		f.Metadata, f.Headers = maps.Clone(meta), info.Headers
		f.Checksum = storedChecksum(meta, nil, "")
		return f, nil
	}
	return s.Info(ctx, dstKey)
}

// IsMD5ETag reports whether etag (quoted or not) has the form of a plain
// MD5: 32 hex digits, without the "-N" of a multipart upload. Only such an
// ETag can be checked against a copy's (see CopyListed); a KMS-encrypted
// object's ETag may have the form too, and then simply fails to match.
func IsMD5ETag(etag string) bool {
	etag = unquote(etag)
	if len(etag) != 32 {
		return false
	}
	for i := 0; i < len(etag); i++ {
		c := etag[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// provenCopy is the copy of src that a CopyObject answered with out, when
// the answer proves it: the ETag of what the server stored is src's plain
// MD5 ETag, so it stored src's bytes (the MD5 of the bytes it wrote equals
// the source's), and with them src's size. The result has the server's
// ETag, LastModified and encryption; the caller knows the metadata and
// headers it asked for. Not proven (false): src's ETag is not an MD5
// (multipart, KMS, SSE-C), the answer has no ETag or another one, or the
// copy is encrypted so that its ETag is no MD5.
func provenCopy(out *s3.CopyObjectOutput, dstKey string, src StoredFile) (StoredFile, bool) {
	if out == nil || out.CopyObjectResult == nil || !src.ETagIsMD5() || !IsMD5ETag(src.ETag) {
		return StoredFile{}, false
	}
	f := StoredFile{Key: dstKey, Size: src.Size, ETag: unquote(aws.ToString(out.CopyObjectResult.ETag)),
		LastModified: aws.ToTime(out.CopyObjectResult.LastModified), Encryption: encryption(out.ServerSideEncryption, out.SSECustomerAlgorithm)}
	if !strings.EqualFold(f.ETag, src.ETag) || !f.ETagIsMD5() {
		return StoredFile{}, false
	}
	f.ETag = src.ETag
	return f, true
}

// CopyListed copies the source object listed (Key, Size and ETag as a
// listing gave them; its ETag a plain MD5, see IsMD5ETag) from src, another
// bucket of the same Client, to dstKey here with one request: a CopyObject
// pinned to the listed ETag (CopySourceIfMatch) with metadata directive
// COPY, so the server gives the copy the source's headers and user
// metadata exactly, and nothing of ferry's. It is the bulk path of a
// migration, which lists its sources anyway: CopyFrom's HEADs of the source
// and the copy would triple its requests.
//
// The copy is verified by the answer: the ETag of what the server stored
// must be the listed MD5, so the bytes are the listed version's. The
// result then has the listed size, the server's ETag, LastModified and
// encryption, and neither Headers nor Metadata (the server copied the
// source's; none were read). An answer that cannot prove it (no ETag,
// another one: a KMS-encrypted destination, a provider whose ETags are no
// MD5s) is checked by a HEAD of the copy, which must show the ETag the copy
// answered with (when it answered one) and pass VerifyCopy against the
// listing; else the error says why and the copy stays for the caller to
// judge.
//
// A source no longer at the listed ETag (replaced since the listing) is
// ErrSourceChanged, and nothing is written: the caller copies the new
// version with CopyFrom, which reads it first. A listed ETag that is no
// plain MD5, or a size above the single-copy threshold, is refused before
// any request: use CopyFrom.
func (s *S3) CopyListed(ctx context.Context, src *S3, listed StoredFile, dstKey string) (StoredFile, error) {
	if src.c != s.c {
		return StoredFile{}, errors.New("server-side copy needs both buckets on one profile (endpoint and credentials); stream the object instead")
	}
	if !IsMD5ETag(listed.ETag) {
		return StoredFile{}, fmt.Errorf("copy %s as listed: ETag %q is not a plain MD5: use CopyFrom", src.display(listed.Key), listed.ETag)
	}
	threshold := s.c.cfg.MultipartCopyThreshold
	if threshold <= 0 {
		threshold = MaxSingleCopySize
	}
	if listed.Size < 0 || listed.Size > threshold {
		return StoredFile{}, fmt.Errorf("copy %s as listed: %d bytes is not one CopyObject (at most %d): use CopyFrom", src.display(listed.Key), listed.Size, threshold)
	}
	api, err := s.api()
	if err != nil {
		return StoredFile{}, err
	}
	srcFull, err := src.fullKey(listed.Key)
	if err != nil {
		return StoredFile{}, err
	}
	dstFull, err := s.fullKey(dstKey)
	if err != nil {
		return StoredFile{}, err
	}
	listed.ETag = unquote(listed.ETag)
	out, err := api.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &s.bucket, Key: &dstFull, CopySource: aws.String(copySource(src.bucket, srcFull)),
		CopySourceIfMatch: aws.String(`"` + listed.ETag + `"`), MetadataDirective: types.MetadataDirectiveCopy})
	if err != nil {
		return StoredFile{}, translate(fmt.Sprintf("copy %s to %s", src.display(listed.Key), s.display(dstKey)), opSource, err)
	}
	if f, ok := provenCopy(out, dstKey, listed); ok {
		return f, nil
	}
	answered := ""
	if out.CopyObjectResult != nil {
		answered = unquote(aws.ToString(out.CopyObjectResult.ETag))
	}
	d, err := s.Info(ctx, dstKey)
	if err != nil {
		return StoredFile{}, fmt.Errorf("copy %s to %s: the answer (ETag %q) does not prove the copy, and checking it failed: %w", src.display(listed.Key), s.display(dstKey), answered, err)
	}
	if answered != "" && d.ETag != answered {
		return StoredFile{}, fmt.Errorf("copy %s to %s: copy verification failed: the copy answered ETag %s but the destination now has %s: written again since, so this copy cannot be checked",
			src.display(listed.Key), s.display(dstKey), answered, d.ETag)
	}
	if err := VerifyCopy(listed, d); err != nil {
		return StoredFile{}, fmt.Errorf("copy %s to %s: %w", src.display(listed.Key), s.display(dstKey), err)
	}
	return d, nil
}

// copySource is the x-amz-copy-source header: bucket and key, URL-encoded
// the way S3 specifies (every byte but the unreserved characters and "/"
// percent-encoded). url.PathEscape is not that: it leaves "+", which the
// server decodes as a space, so "x+y" copied "x y" or was not found.
func copySource(bucket, key string) string {
	return bucket + "/" + encodeKey(key)
}

// encodeKey percent-encodes a key for a URL or header, keeping only
// A-Z a-z 0-9 - _ . ~ and "/".
func encodeKey(key string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(key) * 3)
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~', c == '/':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

func (s *S3) copyPartSize(size int64) int64 {
	ps := s.c.cfg.CopyPartSize
	if ps <= 0 {
		ps = 512 << 20
	}
	return PartSizeFor(size, ps)
}

// copyMultipart copies with UploadPartCopy, parts in parallel; it aborts the
// upload on failure.
func (s *S3) copyMultipart(ctx context.Context, api S3API, src *S3, srcFull string, info StoredFile, dstKey string, meta map[string]string, opts *CopyOptions) error {
	ps := s.copyPartSize(info.Size)
	conc := opts.Concurrency
	// Without a checksum algorithm: the server copies bytes it holds, none
	// pass through ferry to be checked, and the copy records the source's
	// CRC32C in its metadata. (versitygw v1.8.0 answers an UploadPartCopy
	// with the whole source's CRC32C, not the part's, so a FULL_OBJECT
	// Complete of copied parts could not be built from its answers.)
	u, err := s.StartMultipartUpload(ctx, dstKey, &MultipartOptions{Headers: info.Headers, Metadata: meta, PartSize: ps, Tracker: opts.Tracker,
		noChecksums: true})
	if err != nil {
		return err
	}
	dstFull, _ := s.fullKey(dstKey)
	count := int((info.Size + ps - 1) / ps)
	if conc <= 0 {
		conc = DefaultPartConcurrency
	}
	ctx2, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for n := 1; n <= count && ctx2.Err() == nil; n++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			off := int64(n-1) * ps
			end := min(off+ps, info.Size) - 1
			out, err := api.UploadPartCopy(ctx2, &s3.UploadPartCopyInput{Bucket: &s.bucket, Key: &dstFull, UploadId: &u.UploadID,
				PartNumber: aws.Int32(int32(n)), CopySource: aws.String(copySource(src.bucket, srcFull)),
				CopySourceRange:   aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
				CopySourceIfMatch: aws.String(`"` + info.ETag + `"`)})
			if err != nil {
				cancel(translate(fmt.Sprintf("copy part %d of %s", n, src.display(info.Key)), opSource, err))
				return
			}
			etag := ""
			if out.CopyPartResult != nil {
				etag = unquote(aws.ToString(out.CopyPartResult.ETag))
			}
			u.AddPart(Part{Number: n, ETag: etag, Size: end - off + 1})
		})
	}
	wg.Wait()
	err = context.Cause(ctx2)
	if err == nil {
		_, err = s.CompleteMultipartUpload(ctx, u)
	}
	if err != nil {
		actx, c := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer c()
		if aerr := s.AbortMultipartUpload(actx, dstKey, u.UploadID); aerr != nil {
			err = errors.Join(err, aerr)
		} else {
			trackEnded(actx, opts.Tracker, dstKey, u.UploadID)
		}
		return &MultipartUploadError{Key: dstKey, UploadID: u.UploadID, Err: err}
	}
	trackEnded(ctx, opts.Tracker, dstKey, u.UploadID)
	return nil
}

// Move copies srcKey to dstKey, verifies the copy as a HEAD of it shows it,
// and only then deletes the source: the version it copied, never a newer
// one written meanwhile (that is kept, and Move returns ErrSourceChanged). A Move retried after a crash between the copy and the delete finds
// the destination verified and finishes the delete: the object is never lost.
func (s *S3) Move(ctx context.Context, srcKey, dstKey string, opts *CopyOptions) (StoredFile, error) {
	return s.MoveFrom(ctx, s, srcKey, dstKey, opts)
}

// MoveFrom is Move from another bucket of the same Client.
func (s *S3) MoveFrom(ctx context.Context, src *S3, srcKey, dstKey string, opts *CopyOptions) (StoredFile, error) {
	// Not a pointer comparison: two handles on one bucket (or a bucket seen
	// through two clients of one endpoint) are one object store.
	if err := objectid.CheckDistinct(src.ref(srcKey), s.ref(dstKey)); err != nil {
		return StoredFile{}, fmt.Errorf("move %s onto itself: %w: %w", s.display(srcKey), ErrInvalidKey, err)
	}
	srcInfo, err := src.Info(ctx, srcKey)
	if err != nil {
		return StoredFile{}, fmt.Errorf("move source: %w", err)
	}
	// The copy is of the version just read (CopyOptions.Source), the one
	// DeleteVersion deletes below.
	pinned := CopyOptions{}
	if opts != nil {
		pinned = *opts
	}
	pinned.Source = &srcInfo
	if _, err := s.CopyFrom(ctx, src, srcKey, dstKey, &pinned); err != nil {
		return StoredFile{}, err
	}
	// What the destination holds now, read back, not what the copy
	// answered: the source is deleted on the strength of it.
	dst, err := s.Info(ctx, dstKey)
	if err != nil {
		return StoredFile{}, fmt.Errorf("move %s: source kept: check the copy: %w", src.display(srcKey), err)
	}
	if err := VerifyCopy(srcInfo, dst); err != nil {
		return StoredFile{}, fmt.Errorf("move %s: source kept: %w", src.display(srcKey), err)
	}
	// The version copied, not whatever the key holds now: a source
	// written again meanwhile is newer than the copy, and stays.
	changed, err := src.DeleteVersion(ctx, srcInfo)
	if err != nil {
		return StoredFile{}, fmt.Errorf("move: copied to %s but deleting the source failed: %w", s.display(dstKey), err)
	}
	if changed {
		return StoredFile{}, fmt.Errorf("move %s: source kept: it was written again after it was copied to %s (%w); move it again to move the new version",
			src.display(srcKey), s.display(dstKey), ErrSourceChanged)
	}
	return dst, nil
}

// VerifyCopy checks that dst is a faithful copy of src: same size, the
// same recorded CRC32C when both record one (a copy carries its source's
// record over), and, when both ETags are MD5s of the bytes, the same ETag.
// Multipart ETags, and those of KMS or SSE-C encrypted objects, are opaque
// and differ between copies of equal bytes.
func VerifyCopy(src, dst StoredFile) error {
	if src.Size != dst.Size {
		return fmt.Errorf("copy verification failed: source is %d bytes, destination %d", src.Size, dst.Size)
	}
	if src.Checksum != "" && dst.Checksum != "" && src.Checksum != dst.Checksum {
		return fmt.Errorf("copy verification failed: %w", &IntegrityError{Op: "copy", Check: MetaChecksum, Want: src.Checksum, Got: dst.Checksum})
	}
	if src.ETagIsMD5() && dst.ETagIsMD5() && src.ETag != dst.ETag {
		return fmt.Errorf("copy verification failed: source ETag %s, destination ETag %s", src.ETag, dst.ETag)
	}
	return nil
}
