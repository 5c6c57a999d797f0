package tasks

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/ferryhq/ferry/internal/objectid"
	"github.com/ferryhq/ferry/internal/s3key"
)

// MaxInlineSize is the largest Location.Data accepted: inline bytes travel in
// the payload, through Redis, so they are for small puts only.
const MaxInlineSize = 256 << 10

// DefaultProfile is the profile ParseLocation gives an s3:// location when
// none is named. An empty Location.Profile means the same.
const DefaultProfile = "default"

// Kind says which of a Location's fields is set.
type Kind int

const (
	// KindInvalid is a Location with none, or more than one, of Bucket, Path,
	// URL and Data set.
	KindInvalid Kind = iota
	// KindS3 is an object (or prefix) in a bucket: Bucket, Key, Profile.
	KindS3
	// KindFile is a local file on the worker: Path.
	KindFile
	// KindHTTP is an https:// source: URL.
	KindHTTP
	// KindInline is bytes carried in the payload: Data.
	KindInline
)

func (k Kind) String() string {
	switch k {
	case KindS3:
		return "s3"
	case KindFile:
		return "file"
	case KindHTTP:
		return "https"
	case KindInline:
		return "inline"
	default:
		return "invalid"
	}
}

// Location is a source or destination of a transfer. Exactly one of Bucket,
// Path, URL and Data is set.
type Location struct {
	// Profile names a worker-configured S3 profile (endpoint, region,
	// credentials); s3 only. Empty means DefaultProfile. Never credentials: a
	// payload is plain text in Redis.
	Profile string `json:"profile,omitempty"`
	// Bucket is the S3 bucket.
	Bucket string `json:"bucket,omitempty"`
	// Key is the object key, or the prefix for a recursive delete or a migrate
	// (a directory: "photos" is "photos/"; see DirPrefix).
	Key string `json:"key,omitempty"`
	// Path is a local file on the worker: absolute and clean.
	Path string `json:"path,omitempty"`
	// NoFollow, on a Path, opens the file without following any symlink
	// below the worker's allowed directory: a component that is a symlink
	// when it is opened fails the task as changed at the source. A
	// migration of a local tree sets it on the files its walk found, so a
	// symlink put in place of one, or of a directory above it, after the
	// walk is never followed. Without it, symlinks that stay inside the
	// allowed directory are followed (a put or an upload of one file).
	NoFollow bool `json:"no_follow,omitempty"`
	// URL is an https:// source, without user:password@.
	URL string `json:"url,omitempty"`
	// Data is inline content, puts only, at most MaxInlineSize bytes. A
	// non-nil empty slice is an empty object (hence omitzero, not omitempty).
	Data []byte `json:"data,omitzero"`
}

// Kind reports which kind of location l is, or KindInvalid when not exactly
// one of Bucket, Path, URL and Data is set.
func (l Location) Kind() Kind {
	k, n := KindInvalid, 0
	if l.Bucket != "" {
		k, n = KindS3, n+1
	}
	if l.Path != "" {
		k, n = KindFile, n+1
	}
	if l.URL != "" {
		k, n = KindHTTP, n+1
	}
	if l.Data != nil {
		k, n = KindInline, n+1
	}
	if n != 1 {
		return KindInvalid
	}
	return k
}

// String is the location for display: s3://bucket/key, the path, the URL, or
// "inline (N bytes)". It never holds credentials (a Location has none).
func (l Location) String() string {
	switch l.Kind() {
	case KindS3:
		return "s3://" + l.Bucket + "/" + l.Key
	case KindFile:
		return l.Path
	case KindHTTP:
		// Display only: the query may hold a presigned URL's signature, and
		// this string goes to logs, progress and the dashboard.
		if u, err := url.Parse(l.URL); err == nil {
			u.User, u.RawQuery, u.Fragment = nil, "", ""
			return u.String()
		}
		return "(unparsable URL)"
	case KindInline:
		return fmt.Sprintf("inline (%d bytes)", len(l.Data))
	default:
		return "(invalid location)"
	}
}

// ProfileName is a profile name as given (a payload's, a plan's, a flag's)
// with the default filled in: "" means DefaultProfile. Every reader of a
// profile name resolves it here.
func ProfileName(name string) string { return cmp.Or(name, DefaultProfile) }

// nameRef is l for object identity when its profile is known by name only.
func (l Location) nameRef() objectid.Ref {
	return objectid.Ref{Profile: objectid.Profile{Name: ProfileName(l.Profile), NameOnly: true}, Bucket: l.Bucket, Key: l.Key}
}

var (
	bucketRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	profileRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	schemeRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)
)

// ParseLocation parses a command-line location: "s3://bucket/key" (profile
// names its S3 profile; empty means DefaultProfile), "https://host/path", or
// a local path, made absolute with filepath.Abs. Plain http:// and other
// schemes are refused. The key of an s3:// location may be empty or end in
// "/" (a prefix); the payload constructors validate it for their use.
func ParseLocation(s, profile string) (Location, error) {
	if s == "" {
		return Location{}, errors.New(`empty location: give s3://bucket/key, an https:// URL or a file path`)
	}
	lower := strings.ToLower(s)
	switch {
	case strings.HasPrefix(lower, "s3://"):
		bucket, key, _ := strings.Cut(s[len("s3://"):], "/")
		if bucket == "" {
			return Location{}, fmt.Errorf("location %q has no bucket: write s3://bucket/key", s)
		}
		return Location{Profile: ProfileName(profile), Bucket: bucket, Key: key}, nil
	case strings.HasPrefix(lower, "https://"):
		return Location{URL: s}, nil
	case strings.HasPrefix(lower, "http://"):
		return Location{}, fmt.Errorf("location %q uses plain http: ferry fetches sources over https only; use an https:// URL", s)
	case schemeRE.MatchString(s):
		return Location{}, fmt.Errorf("location %q has an unsupported scheme: use s3://bucket/key, an https:// URL or a file path", s)
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return Location{}, fmt.Errorf("location %q: make the path absolute: %w", s, err)
	}
	return Location{Path: abs}, nil
}

// keyMode says how Validate treats an s3 Key.
type keyMode int

const (
	keyObject keyMode = iota // a non-empty object key (s3key.Validate)
	keyPrefix                // a prefix, possibly empty (s3key.ValidatePrefix)
)

// Validate reports what is wrong with l as an object location, or nil. role
// ("source", "dest") starts the messages.
func (l Location) Validate(role string) error {
	return l.validate(role, keyObject)
}

func (l Location) validate(role string, mode keyMode) error {
	set := 0
	for _, ok := range []bool{l.Bucket != "", l.Path != "", l.URL != "", l.Data != nil} {
		if ok {
			set++
		}
	}
	switch {
	case set == 0:
		return fmt.Errorf("%s: location is empty: set a bucket and key, a path, a URL or inline data", role)
	case set > 1:
		return fmt.Errorf("%s: location sets more than one of bucket, path, url and data: set exactly one", role)
	}
	if l.Profile != "" && l.Kind() != KindS3 {
		return fmt.Errorf("%s: profile %s applies to s3 locations only: remove it", role, quoteProfile(l.Profile))
	}
	if l.NoFollow && l.Kind() != KindFile {
		return fmt.Errorf("%s: no_follow applies to local paths only: remove it", role)
	}
	if l.Key != "" && l.Kind() != KindS3 {
		return fmt.Errorf("%s: key %q applies to s3 locations only: remove it", role, l.Key)
	}
	switch l.Kind() {
	case KindS3:
		if !bucketRE.MatchString(l.Bucket) || strings.Contains(l.Bucket, "..") {
			return fmt.Errorf("%s: bucket %q is not a valid S3 bucket name: use 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit", role, l.Bucket)
		}
		if l.Profile != "" && !profileRE.MatchString(l.Profile) {
			return fmt.Errorf("%s: profile is not a profile name: %s (the value is not repeated: it may be a credential); use 1 to 64 letters, digits, '_', '.' or '-' naming a profile of the worker's config", role, whyNotProfile(l.Profile))
		}
		validate := s3key.Validate
		if mode == keyPrefix {
			validate = s3key.ValidatePrefix
		}
		if err := validate(l.Key); err != nil {
			return fmt.Errorf("%s: s3://%s: %w", role, l.Bucket, err)
		}
	case KindFile:
		if strings.ContainsRune(l.Path, 0) {
			return fmt.Errorf("%s: path %q contains a NUL byte", role, l.Path)
		}
		if !filepath.IsAbs(l.Path) {
			return fmt.Errorf("%s: path %q is relative: the worker runs elsewhere, give an absolute path", role, l.Path)
		}
		if c := filepath.Clean(l.Path); c != l.Path {
			return fmt.Errorf("%s: path %q is not clean (\"..\", \".\", double or trailing slash): use %q", role, l.Path, c)
		}
	case KindHTTP:
		u, err := url.Parse(l.URL)
		if err != nil {
			// Not err: it quotes the whole URL, and a query may be a signature.
			return fmt.Errorf("%s: URL does not parse: write https://host/path", role)
		}
		if u.User != nil {
			// Never echo the URL: it holds a secret.
			return fmt.Errorf("%s: URL for host %q carries user info (user:password@): payloads are plain text in Redis, so secrets never travel in them; configure the credentials on the worker instead", role, u.Host)
		}
		if u.Scheme != "https" {
			return fmt.Errorf("%s: URL for host %q has scheme %q: only https:// sources are accepted", role, u.Host, u.Scheme)
		}
		if u.Host == "" {
			return fmt.Errorf("%s: URL has no host: write https://host/path", role)
		}
	case KindInline:
		if len(l.Data) > MaxInlineSize {
			return fmt.Errorf("%s: inline data is %d bytes, more than %d: write it to a file and enqueue an upload of the path instead", role, len(l.Data), MaxInlineSize)
		}
	}
	return nil
}

// quoteProfile quotes a profile name for an error message, or describes a
// value that is not one without repeating it: a producer that put a
// credential in the profile field must not see it echoed into logs,
// task results and API answers.
func quoteProfile(p string) string {
	if profileRE.MatchString(p) {
		return strconv.Quote(p)
	}
	return "(not a profile name: " + whyNotProfile(p) + ")"
}

// whyNotProfile says what makes p, which fails profileRE, not a profile
// name: its length or its first character that is not allowed.
func whyNotProfile(p string) string {
	if len(p) > 64 {
		return fmt.Sprintf("it is %d bytes long", len(p))
	}
	for _, r := range p {
		if !profileRE.MatchString(string(r)) {
			return fmt.Sprintf("it contains %q", r)
		}
	}
	return "it is not one"
}
