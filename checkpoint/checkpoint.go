package checkpoint

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// MaxParts is the largest part number S3 accepts (parts are 1..10,000).
const MaxParts = 10000

// Sentinel errors. Match them with errors.Is: the store wraps them with the
// task id and what differed.
var (
	// ErrNotFound means no checkpoint exists for the task: never created,
	// deleted, or expired after Options.TTL without a RecordPart.
	ErrNotFound = errors.New("checkpoint: not found")
	// ErrExists means Create found a plan already stored for the task. The
	// stored plan is left unchanged; Load it to resume.
	ErrExists = errors.New("checkpoint: a plan already exists for this task")
	// ErrPlanMismatch means RecordPart or Delete does not fit the stored
	// plan: the stored upload id differs from the one given (a stale
	// worker, or the upload was restarted), or the part number is outside
	// 1..PartCount (1..MaxParts when the total size is unknown). Nothing
	// was written or deleted.
	ErrPlanMismatch = errors.New("checkpoint: does not match the stored plan")
	// ErrInvalid means an argument is unusable (empty task id, a plan
	// without upload id, a part without ETag...): a bug in the caller,
	// retrying will not help.
	ErrInvalid = errors.New("checkpoint: invalid argument")

	// ErrNotOwner means the caller's fencing token is not (or no longer)
	// the one that owns the task: another worker claimed it (see Claim).
	// The caller must stop writing for the task at once.
	ErrNotOwner = errors.New("checkpoint: another worker owns this task now")
)

// Plan is how an upload was started. It is written once by Create and never
// changes: S3 (and R2 strictly) require the part size to stay the same for
// the life of a multipart upload.
type Plan struct {
	// UploadID is the multipart upload id given by CreateMultipartUpload.
	UploadID string
	// Profile names the storage profile (endpoint and credentials). May be empty.
	Profile string
	// Bucket and Key are the destination object.
	Bucket string
	Key    string
	// PartSize is the size of every part but the last, in bytes (>= 1).
	PartSize int64
	// PartCount is the number of parts; 0 when the total size is unknown.
	PartCount int
	// TotalSize is the source length in bytes; -1 when unknown.
	TotalSize int64
	// Fingerprint identifies the source version, opaque to this package
	// (file: size+mtime; s3: etag+size; http: etag/last-modified+length).
	// Resume compares it and starts over when it changed.
	Fingerprint string
	// CreatedAt is when the upload started. Zero means now (set by Create).
	// Stored in UTC with nanoseconds.
	CreatedAt time.Time
	// Checksum is what the whole object must be, opaque to this package
	// (ferry: its CRC32C, as recorded in the object's metadata when the
	// upload started); empty when unknown then. A resumed upload compares
	// its parts' combined checksums with it before it completes.
	Checksum string
	// ChecksumMode is how the upload was created as to checksums, opaque
	// to this package (ferry: storage's "none" or "crc32c", see
	// storage.S3.UploadChecksumMode); its parts and its Complete must be
	// sent in that mode, so a resume whose destination now sends another
	// starts over. Empty means unknown: a plan written by a ferry that did
	// not record it, which resumes as that ferry did, assuming the mode
	// unchanged.
	//
	// It is a field of its own rather than part of Fingerprint: the
	// fingerprint is the source's version, this is the destination's
	// setting, and folding one into the other would make every older
	// checkpoint look changed (and start over) after an upgrade, and
	// blur which of the two changed in the log.
	ChecksumMode string
}

// validate reports the first unusable field of p, wrapping ErrInvalid.
func (p Plan) validate() error {
	switch {
	case p.UploadID == "":
		return fmt.Errorf("plan: upload id is empty: %w", ErrInvalid)
	case p.Bucket == "":
		return fmt.Errorf("plan: bucket is empty: %w", ErrInvalid)
	case p.Key == "":
		return fmt.Errorf("plan: key is empty: %w", ErrInvalid)
	case p.PartSize < 1:
		return fmt.Errorf("plan: part size %d < 1: %w", p.PartSize, ErrInvalid)
	case p.PartCount < 0 || p.PartCount > MaxParts:
		return fmt.Errorf("plan: part count %d outside 0..%d: %w", p.PartCount, MaxParts, ErrInvalid)
	case p.TotalSize < -1:
		return fmt.Errorf("plan: total size %d < -1: %w", p.TotalSize, ErrInvalid)
	}
	return nil
}

// fields returns the hash fields and values of p, flattened for HSET.
func (p Plan) fields() []any {
	f := []any{
		fieldUploadID, p.UploadID,
		fieldProfile, p.Profile,
		fieldBucket, p.Bucket,
		fieldKey, p.Key,
		fieldPartSize, strconv.FormatInt(p.PartSize, 10),
		fieldPartCount, strconv.Itoa(p.PartCount),
		fieldTotalSize, strconv.FormatInt(p.TotalSize, 10),
		fieldFingerprint, p.Fingerprint,
		fieldCreatedAt, p.CreatedAt.UTC().Format(time.RFC3339Nano),
	}
	if p.Checksum != "" {
		f = append(f, fieldChecksum, p.Checksum)
	}
	if p.ChecksumMode != "" {
		f = append(f, fieldChecksumMode, p.ChecksumMode)
	}
	return f
}

// Part is one finished part of the upload.
type Part struct {
	// Number is the part number, 1..PartCount (1..MaxParts when unknown).
	Number int
	// ETag is the ETag UploadPart returned, as given (quotes included).
	ETag string
	// Size is the part length in bytes.
	Size int64
	// Checksum is the part's checksum, opaque to this package (ferry: the
	// CRC32C of the bytes sent, which the server verified), so a resumed
	// upload knows the whole object's checksum without reading finished
	// parts again; empty when unknown. It contains no '|'.
	Checksum string
}

// Checkpoint is a stored plan and the parts finished so far.
type Checkpoint struct {
	TaskID string
	Plan   Plan
	// Parts is sorted by Number, one entry per number (a retried part
	// replaced the earlier record).
	Parts []Part
}

// BytesDone is the sum of the sizes of the finished parts.
func (c Checkpoint) BytesDone() int64 {
	var n int64
	for _, p := range c.Parts {
		n += p.Size
	}
	return n
}

// CorruptError reports a checkpoint hash field that cannot be parsed (or a
// required one that is missing). It wraps the parse error, if any.
type CorruptError struct {
	TaskID string
	Field  string
	Value  string
	// UploadID is the stored upload_id field as it is ("" when missing):
	// what Store.Delete needs to remove this checkpoint.
	UploadID string
	Err      error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("checkpoint: task %q: corrupt field %q = %q: %v", e.TaskID, e.Field, e.Value, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

var errMissing = errors.New("missing")

// parse decodes a checkpoint hash strictly: every plan field must be present
// and well formed, and every p:<n> field must have a canonical n within the
// plan and an <etag>|<size>[|crc32c=<checksum>] value. Unknown fields not starting with "p:" are
// ignored, so a newer ferry may add plan fields without breaking an older one.
func parse(taskID string, h map[string]string) (Checkpoint, error) {
	corrupt := func(field string, err error) error {
		return &CorruptError{TaskID: taskID, Field: field, Value: h[field], UploadID: h[fieldUploadID], Err: err}
	}
	str := func(field string, nonEmpty bool) (string, error) {
		v, ok := h[field]
		if !ok {
			return "", corrupt(field, errMissing)
		}
		if nonEmpty && v == "" {
			return "", corrupt(field, errors.New("empty"))
		}
		return v, nil
	}
	num := func(field string, lo, hi int64) (int64, error) {
		v, err := str(field, true)
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, corrupt(field, err)
		}
		if n < lo || n > hi {
			return 0, corrupt(field, fmt.Errorf("outside %d..%d", lo, hi))
		}
		return n, nil
	}

	c := Checkpoint{TaskID: taskID}
	var err error
	p := &c.Plan
	if p.UploadID, err = str(fieldUploadID, true); err != nil {
		return Checkpoint{}, err
	}
	if p.Profile, err = str(fieldProfile, false); err != nil {
		return Checkpoint{}, err
	}
	if p.Bucket, err = str(fieldBucket, true); err != nil {
		return Checkpoint{}, err
	}
	if p.Key, err = str(fieldKey, true); err != nil {
		return Checkpoint{}, err
	}
	if p.Fingerprint, err = str(fieldFingerprint, false); err != nil {
		return Checkpoint{}, err
	}
	if p.PartSize, err = num(fieldPartSize, 1, 1<<62); err != nil {
		return Checkpoint{}, err
	}
	partCount, err := num(fieldPartCount, 0, MaxParts)
	if err != nil {
		return Checkpoint{}, err
	}
	p.PartCount = int(partCount)
	if p.TotalSize, err = num(fieldTotalSize, -1, 1<<62); err != nil {
		return Checkpoint{}, err
	}
	created, err := str(fieldCreatedAt, true)
	if err != nil {
		return Checkpoint{}, err
	}
	if p.CreatedAt, err = time.Parse(time.RFC3339Nano, created); err != nil {
		return Checkpoint{}, corrupt(fieldCreatedAt, err)
	}
	p.Checksum = h[fieldChecksum]         // optional: older checkpoints have none
	p.ChecksumMode = h[fieldChecksumMode] // likewise

	maxPart := MaxParts
	if p.PartCount > 0 {
		maxPart = p.PartCount
	}
	for field, v := range h {
		ns, ok := strings.CutPrefix(field, partFieldPrefix)
		if !ok {
			continue
		}
		n, err := strconv.Atoi(ns)
		if err != nil {
			return Checkpoint{}, corrupt(field, err)
		}
		if strconv.Itoa(n) != ns {
			return Checkpoint{}, corrupt(field, errors.New("part number not canonical"))
		}
		if n < 1 || n > maxPart {
			return Checkpoint{}, corrupt(field, fmt.Errorf("part number outside 1..%d", maxPart))
		}
		var sum string
		if i := strings.LastIndexByte(v, '|'); i >= 0 && strings.HasPrefix(v[i+1:], partChecksumPrefix) {
			v, sum = v[:i], v[i+1+len(partChecksumPrefix):]
		}
		i := strings.LastIndexByte(v, '|')
		if i < 0 {
			return Checkpoint{}, corrupt(field, errors.New("want <etag>|<size>"))
		}
		if i == 0 {
			return Checkpoint{}, corrupt(field, errors.New("empty etag"))
		}
		size, err := strconv.ParseInt(v[i+1:], 10, 64)
		if err != nil {
			return Checkpoint{}, corrupt(field, err)
		}
		if size < 0 {
			return Checkpoint{}, corrupt(field, errors.New("negative size"))
		}
		c.Parts = append(c.Parts, Part{Number: n, ETag: v[:i], Size: size, Checksum: sum})
	}
	sort.Slice(c.Parts, func(i, j int) bool { return c.Parts[i].Number < c.Parts[j].Number })
	return c, nil
}
