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
	info, err := src.Info(ctx, srcKey)
	if err != nil {
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
		if err := s.copyMultipart(ctx, api, src, srcFull, info, dstKey, meta, opts.Concurrency); err != nil {
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
	if _, err := api.CopyObject(ctx, in, optFns...); err != nil {
		return StoredFile{}, translate(fmt.Sprintf("copy %s to %s", src.display(srcKey), s.display(dstKey)), opSource, err)
	}
	return s.Info(ctx, dstKey)
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
func (s *S3) copyMultipart(ctx context.Context, api S3API, src *S3, srcFull string, info StoredFile, dstKey string, meta map[string]string, conc int) error {
	ps := s.copyPartSize(info.Size)
	u, err := s.StartMultipartUpload(ctx, dstKey, &MultipartOptions{Headers: info.Headers, Metadata: meta, PartSize: ps})
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
		}
		return &MultipartUploadError{Key: dstKey, UploadID: u.UploadID, Err: err}
	}
	return nil
}

// Move copies srcKey to dstKey, verifies the copy, and only then deletes the
// source. A Move retried after a crash between the copy and the delete finds
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
	dst, err := s.CopyFrom(ctx, src, srcKey, dstKey, opts)
	if err != nil {
		return StoredFile{}, err
	}
	if err := VerifyCopy(srcInfo, dst); err != nil {
		return StoredFile{}, fmt.Errorf("move %s: source kept: %w", src.display(srcKey), err)
	}
	if err := src.Delete(ctx, srcKey); err != nil {
		return StoredFile{}, fmt.Errorf("move: copied to %s but deleting the source failed: %w", s.display(dstKey), err)
	}
	return dst, nil
}

// VerifyCopy checks that dst is a faithful copy of src: same size and, when
// both ETags are MD5s of the bytes, the same ETag. Multipart ETags, and those
// of KMS or SSE-C encrypted objects, are opaque and differ between copies of
// equal bytes.
func VerifyCopy(src, dst StoredFile) error {
	if src.Size != dst.Size {
		return fmt.Errorf("copy verification failed: source is %d bytes, destination %d", src.Size, dst.Size)
	}
	if src.ETagIsMD5() && dst.ETagIsMD5() && src.ETag != dst.ETag {
		return fmt.Errorf("copy verification failed: source ETag %s, destination ETag %s", src.ETag, dst.ETag)
	}
	return nil
}
