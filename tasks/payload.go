package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/objectid"
)

// Task type names.
const (
	TypePut     = "ferry:put"
	TypeUpload  = "ferry:upload"
	TypeCopy    = "ferry:copy"
	TypeMove    = "ferry:move"
	TypeDelete  = "ferry:delete"
	TypeMigrate = "ferry:migrate"
	TypeJanitor = "ferry:janitor"
)

// Limits checked by the payloads' Validate methods.
const (
	// MinPartSize and MaxPartSize bound a non-zero PartSize (S3's limits).
	MinPartSize = 5 << 20
	MaxPartSize = 5 << 30
	// MaxParts is S3's limit on the parts of one multipart upload.
	MaxParts = 10000
	// MaxPartConcurrency bounds a non-zero PartConcurrency.
	MaxPartConcurrency = 64
	// MaxObjectSize is S3's limit on one object.
	MaxObjectSize = 5 << 40
	// MaxMetadataSize is S3's limit on user metadata, keys plus values.
	MaxMetadataSize = 2 << 10
	// ReservedMetadataPrefix starts the metadata keys ferry writes itself
	// (e.g. ferry-task-id); payloads may not set them.
	ReservedMetadataPrefix = "ferry-"
)

// PutPayload is the payload of TypePut: one object written to Dest (s3) from
// a file, an https URL, inline bytes or another S3 object.
type PutPayload struct {
	Source Location `json:"source"`
	Dest   Location `json:"dest"`
	// ContentType of the object; empty lets the worker choose.
	ContentType string `json:"content_type,omitempty"`
	// Metadata is user metadata: lowercase keys [a-z0-9-], 2 KiB in all.
	Metadata map[string]string `json:"metadata,omitempty"`
	// Notify, when set, asks for a signed webhook when the transfer ends
	// (see Notify); nil means the worker's default for the queue or the
	// destination's profile, if it has one.
	Notify *Notify `json:"notify,omitempty"`
}

// Validate reports what is wrong with p, or nil.
func (p PutPayload) Validate() error {
	if err := p.Source.Validate("source"); err != nil {
		return err
	}
	if err := validateS3("dest", p.Dest, keyObject); err != nil {
		return err
	}
	if err := checkDistinct("put", p.Source, p.Dest); err != nil {
		return err
	}
	if err := p.Notify.validate(); err != nil {
		return err
	}
	return validateObjectAttrs(p.ContentType, p.Metadata)
}

// UploadPayload is the payload of TypeUpload: a resumable multipart upload to
// Dest (s3) from a file, an https URL or another S3 object.
type UploadPayload struct {
	Source Location `json:"source"`
	Dest   Location `json:"dest"`
	// PartSize in bytes; 0 means the worker's default, else 5 MiB..5 GiB.
	// With Size given, a PartSize that splits it into more than 10,000
	// parts is refused; otherwise the worker raises the part size to fit
	// the source (and logs it). A stream of unknown length grows its parts.
	PartSize int64 `json:"part_size,omitempty"`
	// PartConcurrency is the number of parts in flight; 0 means the
	// worker's default, else 1..64.
	PartConcurrency int `json:"part_concurrency,omitempty"`
	// ContentType of the object; empty lets the worker choose.
	ContentType string `json:"content_type,omitempty"`
	// Metadata is user metadata: lowercase keys [a-z0-9-], 2 KiB in all.
	Metadata map[string]string `json:"metadata,omitempty"`
	// Size is an optional hint of the source's size in bytes, used for the
	// default Timeout; 0 means unknown. The worker trusts the source, not it.
	Size int64 `json:"size,omitempty"`
	// Notify, when set, asks for a signed webhook when the transfer ends
	// (see Notify); nil means the worker's default for the queue or the
	// destination's profile, if it has one.
	Notify *Notify `json:"notify,omitempty"`
}

// Validate reports what is wrong with p, or nil.
func (p UploadPayload) Validate() error {
	if err := p.Source.Validate("source"); err != nil {
		return err
	}
	if p.Source.Kind() == KindInline {
		return errors.New("source: inline data cannot be uploaded in parts: use a put task")
	}
	if err := validateS3("dest", p.Dest, keyObject); err != nil {
		return err
	}
	if err := checkDistinct("upload", p.Source, p.Dest); err != nil {
		return err
	}
	if err := validateParts(p.PartSize, p.PartConcurrency, p.Size); err != nil {
		return err
	}
	if err := p.Notify.validate(); err != nil {
		return err
	}
	return validateObjectAttrs(p.ContentType, p.Metadata)
}

// CopyPayload is the payload of TypeCopy: Source (s3) copied to Dest (s3),
// server-side when both are on one endpoint, else streamed and resumable.
type CopyPayload struct {
	Source Location `json:"source"`
	Dest   Location `json:"dest"`
	// PartSize in bytes; 0 means the worker's default, else 5 MiB..5 GiB.
	// With Size given, a PartSize that splits it into more than 10,000
	// parts is refused; otherwise the worker raises the part size to fit
	// the source (and logs it). A stream of unknown length grows its parts.
	PartSize int64 `json:"part_size,omitempty"`
	// PartConcurrency is the number of parts in flight; 0 means the
	// worker's default, else 1..64.
	PartConcurrency int `json:"part_concurrency,omitempty"`
	// Size is an optional hint of the source's size in bytes, used for the
	// default Timeout; 0 means unknown.
	Size int64 `json:"size,omitempty"`
	// Migration is the id of the ferry:migrate task that enqueued this
	// copy, if any: copies of one migration share its SlowDown backoff.
	Migration string `json:"migration,omitempty"`
	// Notify, when set, asks for a signed webhook when the transfer ends
	// (see Notify); nil means the worker's default for the queue or the
	// destination's profile, if it has one.
	Notify *Notify `json:"notify,omitempty"`
}

// Validate reports what is wrong with p, or nil.
func (p CopyPayload) Validate() error {
	return validateCopy("copy", p.Source, p.Dest, p.PartSize, p.PartConcurrency, p.Size, p.Notify)
}

// MovePayload is the payload of TypeMove: a copy, verified at Dest, then the
// deletion of Source. Its fields mean what CopyPayload's do.
type MovePayload struct {
	Source          Location `json:"source"`
	Dest            Location `json:"dest"`
	PartSize        int64    `json:"part_size,omitempty"`
	PartConcurrency int      `json:"part_concurrency,omitempty"`
	Size            int64    `json:"size,omitempty"`
	// Notify, when set, asks for a signed webhook when the transfer ends
	// (see Notify); nil means the worker's default for the queue or the
	// destination's profile, if it has one.
	Notify *Notify `json:"notify,omitempty"`
}

// Validate reports what is wrong with p, or nil.
func (p MovePayload) Validate() error {
	return validateCopy("move", p.Source, p.Dest, p.PartSize, p.PartConcurrency, p.Size, p.Notify)
}

// DeletePayload is the payload of TypeDelete: one object, or with Recursive
// every object under the prefix Dest.Key.
type DeletePayload struct {
	Dest Location `json:"dest"`
	// Recursive makes Dest.Key a prefix, which is a directory: "logs/2024"
	// deletes logs/2024/... and never logs/2024-old/...; "logs/2024*" is
	// the raw prefix (see DirPrefix).
	Recursive bool `json:"recursive,omitempty"`
	// AllowAll permits a recursive delete with an empty prefix: the whole
	// bucket. Without it an empty prefix is refused.
	AllowAll bool `json:"allow_all,omitempty"`
	// DryRun lists what a recursive delete would delete (the count and up
	// to 1,000 keys, as the task's result) and deletes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Notify, when set, asks for a signed webhook when the transfer ends
	// (see Notify); nil means the worker's default for the queue or the
	// destination's profile, if it has one.
	Notify *Notify `json:"notify,omitempty"`
}

// Validate reports what is wrong with p, or nil.
func (p DeletePayload) Validate() error {
	if err := p.Notify.validate(); err != nil {
		return err
	}
	if !p.Recursive {
		if p.AllowAll {
			return errors.New("allow_all applies to recursive deletes only: set recursive or drop allow_all")
		}
		if p.DryRun {
			return errors.New("dry_run applies to recursive deletes only: one object has nothing to preview (HEAD it with `ferry info`)")
		}
		return validateS3("dest", p.Dest, keyObject)
	}
	if err := validateS3("dest", p.Dest, keyPrefix); err != nil {
		return err
	}
	if DirPrefix(p.Dest.Key) == "" && !p.AllowAll {
		return fmt.Errorf("dest: recursive delete with prefix %q would empty the whole bucket %q: give a prefix, or set allow_all if that is what you mean", p.Dest.Key, p.Dest.Bucket)
	}
	return nil
}

func validateS3(role string, l Location, mode keyMode) error {
	if err := l.validate(role, mode); err != nil {
		return err
	}
	if k := l.Kind(); k != KindS3 {
		return fmt.Errorf("%s: must be an s3://bucket/key location, not %s %q", role, k, l.String())
	}
	return nil
}

// validateCopy validates the fields a copy and a move share (a move is a
// copy, then a delete): what names the task type in errors.
func validateCopy(what string, src, dst Location, partSize int64, partConcurrency int, size int64, notify *Notify) error {
	if err := validateS3("source", src, keyObject); err != nil {
		return err
	}
	if err := validateS3("dest", dst, keyObject); err != nil {
		return err
	}
	if err := checkDistinct(what, src, dst); err != nil {
		return err
	}
	if err := validateParts(partSize, partConcurrency, size); err != nil {
		return err
	}
	return notify.validate()
}

// checkDistinct refuses a transfer from an s3 source onto itself as far as
// a payload can tell: profiles known by name only (the same name, bucket and
// key). Client.Enqueue, given the profiles' endpoints, and the worker also
// see through different names for one endpoint and prefix.
func checkDistinct(what string, src, dst Location) error {
	if src.Kind() != KindS3 || dst.Kind() != KindS3 {
		return nil
	}
	if err := objectid.CheckDistinct(src.nameRef(), dst.nameRef()); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// validateParts checks the part settings a producer gave. A part_size too
// small for a known size is refused rather than silently raised: it was set
// explicitly, and the producer should know it is not what will be used. The
// default (0) always works: the worker fits it to the source.
func validateParts(partSize int64, partConcurrency int, size int64) error {
	if partSize != 0 && (partSize < MinPartSize || partSize > MaxPartSize) {
		return fmt.Errorf("part_size %d is out of range: use 0 for the worker's default, or 5 MiB (%d) to 5 GiB (%d)", partSize, MinPartSize, MaxPartSize)
	}
	if partConcurrency != 0 && (partConcurrency < 1 || partConcurrency > MaxPartConcurrency) {
		return fmt.Errorf("part_concurrency %d is out of range: use 0 for the worker's default, or 1 to %d", partConcurrency, MaxPartConcurrency)
	}
	if size < 0 || size > MaxObjectSize {
		return fmt.Errorf("size %d is out of range: use 0 when unknown, at most 5 TiB (%d)", size, int64(MaxObjectSize))
	}
	if partSize > 0 && size > 0 && (size+partSize-1)/partSize > MaxParts {
		need := (size + MaxParts - 1) / MaxParts
		return fmt.Errorf("part_size %d splits %d bytes into more than %d parts: use a part_size of at least %d, or 0 for the worker's choice", partSize, size, MaxParts, max(need, MinPartSize))
	}
	return nil
}

var metadataKeyRE = regexp.MustCompile(`^[a-z0-9-]+$`)

func validateObjectAttrs(contentType string, md map[string]string) error {
	if contentType != "" {
		if _, _, err := mime.ParseMediaType(contentType); err != nil {
			return fmt.Errorf("content_type %q is not a media type such as \"text/plain; charset=utf-8\": %w", contentType, err)
		}
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the same map always gives the same error
	total := 0
	for _, k := range keys {
		v := md[k]
		if !metadataKeyRE.MatchString(k) {
			return fmt.Errorf("metadata key %q: use lowercase letters, digits and '-' only (S3 lowercases keys anyway)", k)
		}
		if strings.HasPrefix(k, ReservedMetadataPrefix) {
			return fmt.Errorf("metadata key %q: keys starting %q are reserved for ferry: rename it", k, ReservedMetadataPrefix)
		}
		if !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("metadata %q: the value must be valid UTF-8 without control characters", k)
		}
		total += len(k) + len(v)
	}
	if total > MaxMetadataSize {
		return fmt.Errorf("metadata is %d bytes (keys plus values), more than S3's %d: shorten it", total, MaxMetadataSize)
	}
	return nil
}

// validator is a payload.
type validator interface{ Validate() error }

// decode unmarshals t's payload into a T strictly (unknown fields are an
// error) and validates it. Every error wraps asynq.SkipRetry: a bad payload
// never becomes good by retrying.
func decode[T validator](t *asynq.Task, typ string) (T, error) {
	var p T
	if t == nil {
		return p, fmt.Errorf("decode %s payload: nil task: %w", typ, asynq.SkipRetry)
	}
	if t.Type() != typ {
		return p, fmt.Errorf("decode %s payload: task has type %q: %w", typ, t.Type(), asynq.SkipRetry)
	}
	if !utf8.Valid(t.Payload()) {
		// encoding/json would replace the bad bytes with U+FFFD and so
		// silently change a key or a path.
		return p, fmt.Errorf("decode %s payload: not valid UTF-8 (JSON decoding would replace the invalid bytes and change keys or paths): %w", typ, asynq.SkipRetry)
	}
	dec := json.NewDecoder(bytes.NewReader(t.Payload()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("decode %s payload: %v: %w", typ, err, asynq.SkipRetry)
	}
	if dec.More() {
		return p, fmt.Errorf("decode %s payload: trailing data after the JSON object: %w", typ, asynq.SkipRetry)
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("invalid %s payload: %v: %w", typ, err, asynq.SkipRetry)
	}
	return p, nil
}

// DecodePut decodes and validates a TypePut task's payload. Errors wrap
// asynq.SkipRetry.
func DecodePut(t *asynq.Task) (PutPayload, error) { return decode[PutPayload](t, TypePut) }

// DecodeUpload decodes and validates a TypeUpload task's payload. Errors wrap
// asynq.SkipRetry.
func DecodeUpload(t *asynq.Task) (UploadPayload, error) {
	return decode[UploadPayload](t, TypeUpload)
}

// DecodeCopy decodes and validates a TypeCopy task's payload. Errors wrap
// asynq.SkipRetry.
func DecodeCopy(t *asynq.Task) (CopyPayload, error) { return decode[CopyPayload](t, TypeCopy) }

// DecodeMove decodes and validates a TypeMove task's payload. Errors wrap
// asynq.SkipRetry.
func DecodeMove(t *asynq.Task) (MovePayload, error) { return decode[MovePayload](t, TypeMove) }

// DecodeDelete decodes and validates a TypeDelete task's payload. Errors wrap
// asynq.SkipRetry. The Dest.Key of a recursive delete comes back as the
// literal prefix to list (DirPrefix applied): "logs/2024" is "logs/2024/".
func DecodeDelete(t *asynq.Task) (DeletePayload, error) {
	p, err := decode[DeletePayload](t, TypeDelete)
	if err == nil && p.Recursive {
		p.Dest.Key = DirPrefix(p.Dest.Key)
	}
	return p, err
}

// MigratePayload is the payload of TypeMigrate: copy every object under
// Source (an s3 prefix) to the same relative key under Dest (an s3 prefix),
// skipping objects already identical there. Source may instead be a local
// directory on the worker (Source.Path, under its allow_dirs): every regular
// file of the tree is uploaded to Dest under its path relative to the
// directory ("a/b.jpg"); symlinks and special files are passed over with a
// counted reason, never followed: each file is named with
// Location.NoFollow, so one replaced (or a directory above it) by a symlink
// after the walk fails as changed at the source instead of being read
// through it.
type MigratePayload struct {
	Source Location `json:"source"`
	Dest   Location `json:"dest"`
	// DryRun lists what would be copied and skipped (and with DeleteExtra
	// what would be deleted), and writes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// DeleteExtra deletes destination objects missing at the source (sync
	// semantics), only after every copy succeeded and both complete
	// listings passed their checks, and never an object modified at the
	// destination after the migration started.
	DeleteExtra bool `json:"delete_extra,omitempty"`
	// Include and Exclude are path.Match globs on keys relative to the
	// source (and destination) prefix; a key is taken when it matches some
	// Include (or there are none) and no Exclude. A glob matches a key or
	// any of its leading directories: "tmp" is everything under tmp/, and
	// "photos*" selects photos/..., photos-2019/... and photos.bak (the way
	// to ask for a raw prefix). "*" does not cross "/"; "**" is any key.
	Include []string `json:"include,omitempty"`
	Exclude []string `json:"exclude,omitempty"`
	// Window caps the tasks of this migration pending or running at once
	// (batches of up to 100 small objects, and a copy task per object
	// at or above tasks.MaxBatchObjectSize); 0 means 64. It keeps Redis
	// memory flat for any number of objects.
	Window int `json:"window,omitempty"`
	// CheckHeaders compares, for every object of the same size at both
	// ends, the headers and user metadata of both (two HEADs), as well as
	// what the listings show. Without it an object is identical when the
	// listings show the same size and ETag and the source not modified
	// after the destination was written (no HEAD), or, when the ETags
	// differ, ferry's record of the source ETag at the destination (one
	// HEAD); a change of headers alone at the destination, or at the source
	// within the second of the copy, is then not seen.
	CheckHeaders bool `json:"check_headers,omitempty"`
	// PartSize and PartConcurrency are passed to each copy; PartSize is
	// raised for an object it would split into more than 10,000 parts.
	PartSize        int64 `json:"part_size,omitempty"`
	PartConcurrency int   `json:"part_concurrency,omitempty"`
	// Notify, when set, asks for a signed webhook when the transfer ends
	// (see Notify); nil means the worker's default for the queue or the
	// destination's profile, if it has one.
	Notify *Notify `json:"notify,omitempty"`
}

// MaxMigrateWindow bounds MigratePayload.Window.
const MaxMigrateWindow = 10000

// Validate reports what is wrong with p, or nil.
func (p MigratePayload) Validate() error {
	local := p.Source.Kind() == KindFile
	if err := p.Source.validate("source", keyPrefix); err != nil {
		return err
	}
	if k := p.Source.Kind(); k != KindS3 && !local {
		return fmt.Errorf("source: must be an s3://bucket/prefix location or a local directory on the worker, not %s %q", k, p.Source.String())
	}
	if err := validateS3("dest", p.Dest, keyPrefix); err != nil {
		return err
	}
	for _, l := range []Location{p.Source, p.Dest} {
		if l.Kind() == KindS3 && strings.HasSuffix(l.Key, "*") {
			return fmt.Errorf("prefix %q ends in '*': a migration maps keys from one directory to another; migrate the parent directory and select with an include glob instead (--include '%s')", l.Key, path.Base(l.Key))
		}
	}
	if p.Window < 0 || p.Window > MaxMigrateWindow {
		return fmt.Errorf("window %d is out of range: use 1..%d (0 means 64)", p.Window, MaxMigrateWindow)
	}
	for _, g := range append(slices.Clone(p.Include), p.Exclude...) {
		if _, err := path.Match(g, ""); err != nil {
			return fmt.Errorf("glob %q is malformed: %v", g, err)
		}
	}
	if !local {
		if err := objectid.CheckNoOverlap(p.Source.dir().nameRef(), p.Dest.dir().nameRef()); err != nil {
			return err
		}
	}
	if err := p.Notify.validate(); err != nil {
		return err
	}
	return validateParts(p.PartSize, p.PartConcurrency, 0)
}

// DecodeMigrate decodes and validates a TypeMigrate payload. Source.Key and
// Dest.Key come back as the literal prefixes to list (DirPrefix applied):
// "photos" is "photos/" on both sides. A local Source.Path is a directory
// already and comes back as it is.
func DecodeMigrate(t *asynq.Task) (MigratePayload, error) {
	p, err := decode[MigratePayload](t, TypeMigrate)
	if err == nil {
		if p.Source.Kind() == KindS3 {
			p.Source.Key = DirPrefix(p.Source.Key)
		}
		p.Dest.Key = DirPrefix(p.Dest.Key)
	}
	return p, err
}
