package objectid

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"strings"
)

// Profile is what identity needs of an S3 profile: where its objects live.
type Profile struct {
	// Name of the profile, for messages only.
	Name string
	// EndpointURL is the profile's endpoint_url. Empty means AWS, in the
	// partition of Region.
	EndpointURL string
	// Region matters only for AWS, where it selects the partition; empty
	// means the commercial partition (aws).
	Region string
	// Prefix is the profile's key prefix; a "/" is added when missing, as
	// storage does ("archive" means "archive/").
	Prefix string
	// NameOnly marks a profile known by its name only (a producer without
	// the worker's configuration): its endpoint is the name, so two such
	// profiles are one endpoint exactly when their names are equal, and
	// Prefix is ignored.
	NameOnly bool
}

// Ref is a bucket and key seen through a profile, as a user spelled it.
type Ref struct {
	Profile Profile
	Bucket  string
	// Key is an object key, or a prefix for Overlap.
	Key string
}

// String is the location as the user spelled it, for messages:
// s3://bucket/key via profile "name" (without a name: s3://bucket/key).
func (r Ref) String() string {
	if r.Profile.Name == "" {
		return fmt.Sprintf("s3://%s/%s", r.Bucket, r.Key)
	}
	return fmt.Sprintf("s3://%s/%s via profile %q", r.Bucket, r.Key, r.Profile.Name)
}

// Object is a normalised identity: two Refs are the same stored object
// exactly when their Objects are equal.
type Object struct {
	// Endpoint is the normalised endpoint (see Endpoint).
	Endpoint string
	Bucket   string
	// Key is the full key: the profile's prefix and the key.
	Key string
}

// String is the object for messages: s3://bucket/fullkey at endpoint.
func (o Object) String() string {
	return fmt.Sprintf("s3://%s/%s at %s", o.Bucket, o.Key, o.Endpoint)
}

// Of returns r's normalised identity.
func Of(r Ref) Object {
	if r.Profile.NameOnly {
		return Object{Endpoint: fmt.Sprintf("profile %q", r.Profile.Name), Bucket: r.Bucket, Key: r.Key}
	}
	return Object{Endpoint: Endpoint(r.Profile.EndpointURL, r.Profile.Region), Bucket: r.Bucket,
		Key: Prefix(r.Profile.Prefix) + r.Key}
}

// Same reports whether a and b are the same stored object. It is the one
// function ferry asks; see the package documentation for what it compares.
func Same(a, b Ref) bool { return Of(a) == Of(b) }

// Overlap reports whether the prefixes a.Key and b.Key, each under its
// profile's prefix, select overlapping objects in one bucket of one
// endpoint: one full prefix starts with the other. A migration between
// overlapping prefixes would copy its own output.
func Overlap(a, b Ref) bool {
	oa, ob := Of(a), Of(b)
	return oa.Endpoint == ob.Endpoint && oa.Bucket == ob.Bucket &&
		(strings.HasPrefix(oa.Key, ob.Key) || strings.HasPrefix(ob.Key, oa.Key))
}

// Errors callers branch on with errors.Is.
var (
	// ErrSameObject: the source and destination of a transfer are one
	// stored object.
	ErrSameObject = errors.New("source and destination are the same object")
	// ErrOverlap: the source and destination prefixes of a migration
	// overlap.
	ErrOverlap = errors.New("source and destination prefixes overlap")
)

// SameObjectError says that the two ends of a transfer are one object. Its
// message names both spellings and the object they share; it matches
// ErrSameObject.
type SameObjectError struct {
	Source, Dest Ref
	Object       Object
}

func (e *SameObjectError) Error() string {
	return fmt.Sprintf("%s and %s are the same object %s: a copy would rewrite it onto itself and a move would delete it; give a different destination",
		e.Source, e.Dest, e.Object)
}

// Is makes errors.Is(err, ErrSameObject) true.
func (e *SameObjectError) Is(target error) bool { return target == ErrSameObject }

// CheckDistinct returns a *SameObjectError when src and dst are the same
// stored object, else nil.
func CheckDistinct(src, dst Ref) error {
	if !Same(src, dst) {
		return nil
	}
	return &SameObjectError{Source: src, Dest: dst, Object: Of(dst)}
}

// CheckNoOverlap returns an error when the prefixes src and dst overlap (see
// Overlap), else nil.
func CheckNoOverlap(src, dst Ref) error {
	if !Overlap(src, dst) {
		return nil
	}
	return fmt.Errorf("%w: %s and %s (%s and %s): the migration would copy its own output; choose prefixes where neither contains the other",
		ErrOverlap, src, dst, Of(src), Of(dst))
}

// Prefix is a profile's key prefix as storage applies it: "" stays "", else
// it ends in "/".
func Prefix(p string) string {
	if p == "" || strings.HasSuffix(p, "/") {
		return p
	}
	return p + "/"
}

// awsHostRE matches the S3 endpoints of AWS: s3.amazonaws.com,
// s3.<region>.amazonaws.com, s3-<region>.amazonaws.com,
// s3.dualstack.<region>.amazonaws.com, s3-fips..., s3-accelerate..., and
// the same under amazonaws.com.cn; also a virtual-host base URL
// (bucket.s3...).
var awsHostRE = regexp.MustCompile(`^(?:[a-z0-9.-]+\.)?s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com(?:\.cn)?$`)

// Endpoint is the normalised form of an endpoint URL (with the profile's
// region, which matters only for AWS): "scheme://host[:port][/path]", or
// "AWS S3 (partition P)" for every endpoint of one AWS partition. It
// needs no network access. An endpoint that does not parse as a URL is
// returned trimmed and lower-cased: it compares equal only to itself.
func Endpoint(endpointURL, region string) string {
	raw := strings.TrimSpace(endpointURL)
	if raw == "" {
		return awsEndpoint(region, "")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return strings.ToLower(strings.TrimRight(raw, "/"))
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if awsHostRE.MatchString(host) {
		return awsEndpoint(region, host)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	}
	port := u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	p := strings.TrimRight(u.EscapedPath(), "/")
	if p != "" {
		p = path.Clean(p)
	}
	return scheme + "://" + host + p
}

// awsEndpoint names the AWS partition of a region or of an endpoint host.
// Bucket names are unique within a partition, whatever region's endpoint
// reaches them.
func awsEndpoint(region, host string) string {
	partition := "aws"
	switch {
	case strings.HasSuffix(host, ".amazonaws.com.cn"), host == "" && strings.HasPrefix(strings.ToLower(region), "cn-"):
		partition = "aws-cn"
	case strings.Contains(host, "us-gov-"), host == "" && strings.HasPrefix(strings.ToLower(region), "us-gov-"):
		partition = "aws-us-gov"
	}
	return "AWS S3 (partition " + partition + ")"
}
