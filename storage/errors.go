package storage

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Sentinel errors callers branch on with errors.Is. Every error the package
// returns for these conditions wraps one of them, plus the SDK error when
// there was one.
var (
	// ErrNotFound: the object, bucket or multipart upload does not exist.
	ErrNotFound = errors.New("not found")
	// ErrBucketNotFound is an ErrNotFound for a missing bucket.
	ErrBucketNotFound = fmt.Errorf("bucket %w", ErrNotFound)
	// ErrUploadNotFound is an ErrNotFound for a missing multipart upload.
	ErrUploadNotFound = fmt.Errorf("multipart upload %w", ErrNotFound)
	// ErrPermission: the credentials are wrong or lack the permission.
	ErrPermission = errors.New("permission denied")
	// ErrExists: a conditional write found the object already there.
	ErrExists = errors.New("already exists")
	// ErrInvalidKey: the key (after the prefix is applied) is not usable.
	ErrInvalidKey = errors.New("invalid key")
	// ErrClosed: the storage was closed.
	ErrClosed = errors.New("storage closed")
	// ErrSourceChanged: a read or copy pinned to a source ETag found another
	// version (412 on If-Match). Retrying starts over from the new version.
	ErrSourceChanged = errors.New("the source object changed during the transfer")
	// ErrIntegrity: bytes failed an integrity check. The server rejected
	// what was sent (BadDigest: the Content-MD5 or checksum computed from the
	// source does not match what arrived), or bytes read do not match the
	// checksum recorded for them. The error is an *IntegrityError.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrListingInconsistent: a listing broke S3's contract — keys not
	// strictly increasing, a key outside the requested prefix, or a page
	// marked truncated without a continuation token. Nothing that decides
	// by comparing listings (what to delete, where to resume) may trust it.
	ErrListingInconsistent = errors.New("inconsistent listing")
)

// IntegrityError reports bytes that failed an integrity check, and which.
type IntegrityError struct {
	// Op names what was checked: "upload part 3 of s3://b/k", "read s3://b/k".
	Op string
	// Check names the check: "Content-MD5", "x-amz-checksum-crc32c",
	// MetaChecksum, "ETag (MD5)".
	Check string
	// Want and Got are the expected and computed values, when known (a
	// server that rejects a part does not say what it computed).
	Want, Got string
	// Attempts is how many times the server rejected the bytes (each time
	// re-read from the source and re-sent); zero for a read that did not
	// match its checksum.
	Attempts int
	// Err is the server's answer (BadDigest...), if any.
	Err error
}

func (e *IntegrityError) Error() string {
	msg := fmt.Sprintf("%s: %v (%s)", e.Op, ErrIntegrity, e.Check)
	if e.Attempts > 0 {
		msg += fmt.Sprintf(": the server rejected the bytes %d times, each re-read from the source: they are corrupted between ferry and the server", e.Attempts)
	}
	if e.Want != "" || e.Got != "" {
		msg += fmt.Sprintf(": want %s, got %s", e.Want, e.Got)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *IntegrityError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrIntegrity}
	}
	return []error{ErrIntegrity, e.Err}
}

// ConfigError reports an invalid Config field and how to fix it.
type ConfigError struct {
	Field  string // the Config field, in the seed's snake_case
	Reason string
}

func (e *ConfigError) Error() string { return "storage config: " + e.Field + ": " + e.Reason }

// MultipartUploadError is returned when a multipart upload fails after it
// started; it carries what a caller needs to resume or abort it.
type MultipartUploadError struct {
	Key      string
	UploadID string
	Err      error
}

func (e *MultipartUploadError) Error() string {
	return fmt.Sprintf("multipart upload %s of %q: %v", e.UploadID, e.Key, e.Err)
}

func (e *MultipartUploadError) Unwrap() error { return e.Err }

// opKind tells translate which sentinel a bare 404 means.
type opKind int

const (
	opObject opKind = iota
	opUpload
	opBucket
	// opSource is a read or copy conditional on the source's ETag.
	opSource
)

// translate maps an SDK error to ferry's sentinels, once, at this boundary.
// Providers disagree on codes: AWS answers NoSuchUpload for a finished or
// aborted upload where Spaces answers NoSuchKey; HEAD has no body so only the
// status code (404/403) is there; B2 and R2 answer AccessDenied for unknown
// keys in some configurations, which we cannot tell apart and keep as
// ErrPermission.
func translate(op string, kind opKind, err error) error {
	if err == nil {
		return nil
	}
	var ae smithy.APIError
	code := ""
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	status := 0
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	var sentinel error
	switch code {
	case "NoSuchBucket":
		sentinel = ErrBucketNotFound
	case "NoSuchUpload":
		sentinel = ErrUploadNotFound
	case "NoSuchKey", "NotFound":
		sentinel = notFoundFor(kind)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
		"InvalidToken", "ExpiredToken", "AllAccessDisabled", "AccountProblem":
		sentinel = ErrPermission
	case "PreconditionFailed":
		sentinel = ErrExists
		if kind == opSource {
			sentinel = ErrSourceChanged
		}
	case "BucketAlreadyOwnedByYou", "BucketAlreadyExists":
		sentinel = ErrExists
	case "BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch":
		// The body that arrived does not match the Content-MD5, checksum or
		// payload hash sent with it (AWS, MinIO, versitygw: BadDigest; a
		// malformed or truncated header: InvalidDigest). The caller re-reads
		// and re-sends; see UploadParts and Put.
		sentinel = ErrIntegrity
	}
	if sentinel == nil {
		switch status {
		case http.StatusNotFound:
			sentinel = notFoundFor(kind)
		case http.StatusForbidden:
			sentinel = ErrPermission
		case http.StatusPreconditionFailed:
			sentinel = ErrExists
			if kind == opSource {
				sentinel = ErrSourceChanged
			}
		}
	}
	if sentinel != nil {
		return fmt.Errorf("%s: %w: %w", op, sentinel, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// serverAnswer is the server's error (code and message) inside err, for
// messages that already say which request failed; err when there is none.
func serverAnswer(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae
	}
	return err
}

// notFoundFor is the sentinel for a bare 404 or a generic "NotFound" code.
func notFoundFor(kind opKind) error {
	switch kind {
	case opUpload:
		return ErrUploadNotFound
	case opBucket:
		return ErrBucketNotFound
	}
	return ErrNotFound
}

// IsPermanent reports whether retrying err cannot help: missing objects or
// buckets, denied access, bad keys or configuration, and bytes the server
// rejected as corrupt on every one of IntegritySends attempts (each re-read
// from the source) — a path that corrupts data so often must not be
// retried for hours. A read that did not match its checksum is not
// permanent: the next attempt reads again. Callers (the worker) use it to
// archive a task at once instead of retrying it.
func IsPermanent(err error) bool {
	if ie := (*IntegrityError)(nil); errors.As(err, &ie) {
		return ie.Attempts > 0
	}
	if errors.Is(err, ErrUploadNotFound) {
		// The upload was aborted elsewhere (a lifecycle rule, the janitor):
		// a retry starts a new one.
		return false
	}
	var ce *ConfigError
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrPermission) ||
		errors.Is(err, ErrInvalidKey) || errors.Is(err, ErrExists) || errors.As(err, &ce)
}

// IsThrottle reports whether err is the server asking the client to slow
// down (SlowDown, 503, 429): callers should back off, and share the backoff
// among requests to the same server.
func IsThrottle(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "SlowDown", "RequestLimitExceeded", "TooManyRequests", "Throttling", "ServiceUnavailable":
			return true
		}
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode() == http.StatusServiceUnavailable || re.HTTPStatusCode() == http.StatusTooManyRequests
	}
	return false
}
