package storage

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Provider names an S3 implementation; it selects the quirks in providerTable.
type Provider string

// Providers ferry knows. Generic is any other S3-compatible server.
const (
	ProviderAWS    Provider = "aws"
	ProviderR2     Provider = "r2"
	ProviderB2     Provider = "b2"
	ProviderSpaces Provider = "spaces"
	ProviderMinIO  Provider = "minio"
	// ProviderVersity is Versity's S3 gateway (versitygw), which ferry's
	// tests, `ferry dev` and the compose file run.
	ProviderVersity Provider = "versitygw"
	ProviderGeneric Provider = "generic"
)

// Limits of the S3 API, and defaults.
const (
	DefaultPresignedExpiry    = time.Hour
	MaxPresignedExpiry        = 7 * 24 * time.Hour
	DefaultMaxPoolConnections = 10
	MinPartSize               = 5 << 20
	MaxPartSize               = 5 << 30
	MaxParts                  = 10000
	// MaxSingleCopySize is the largest object CopyObject can copy; larger
	// ones are copied with UploadPartCopy.
	MaxSingleCopySize = 5 << 30
)

// Config is the seed's S3Config plus Provider and ForcePathStyle. A ferry
// profile is a Config without a Bucket: see NewClient.
type Config struct {
	// Bucket is required by New; NewClient ignores it.
	Bucket string `yaml:"bucket"`
	// Region; empty means the SDK's default chain (AWS_REGION, shared
	// config), then "us-east-1" ("auto" for R2).
	Region string `yaml:"region"`
	// EndpointURL of an S3-compatible service, with scheme. Empty means AWS.
	EndpointURL string `yaml:"endpoint_url"`
	// AccessKeyID and SecretAccessKey, SessionToken: explicit credentials.
	// When empty the SDK's default chain is used, in the seed's order:
	// environment, shared credentials file, IAM role.
	AccessKeyID     string `yaml:"access_key_id"`
	SecretAccessKey string `yaml:"secret_access_key"`
	SessionToken    string `yaml:"session_token"`
	// Prefix is prepended to every key and stripped from every returned
	// key. A "/" is added when missing, so "uploads" means "uploads/".
	Prefix string `yaml:"prefix"`
	// PresignedExpiry is the default lifetime of URL; zero means one hour.
	// At most seven days (SigV4's limit).
	PresignedExpiry time.Duration `yaml:"presigned_expiry"`
	// UseSSL: nil means true. False selects http for AWS endpoints; with
	// EndpointURL the URL's scheme must agree.
	UseSSL *bool `yaml:"use_ssl"`
	// VerifySSL: nil means true. False skips TLS certificate checks (for
	// self-signed test servers only).
	VerifySSL *bool `yaml:"verify_ssl"`
	// MaxPoolConnections caps the profile's requests in flight, and so the
	// connections it uses at once (one a server is closing no longer
	// counts); zero means 10 (a worker gives a profile without one its
	// requests in flight instead).
	MaxPoolConnections int `yaml:"max_pool_connections"`
	// Provider selects quirks; empty means detected from EndpointURL.
	Provider Provider `yaml:"provider"`
	// ForcePathStyle addresses buckets as http://host/bucket/key. It is
	// always on for minio and generic providers.
	ForcePathStyle bool `yaml:"force_path_style"`
	// Integrity: nil means true: every part and PutObject carries a
	// checksum the server verifies (Content-MD5, or CRC32C on AWS), every
	// object records its CRC32C (MetaChecksum), and reads are verified.
	// False turns all of it off; it exists to measure what integrity costs
	// (docs/performance.md), not for production.
	Integrity *bool `yaml:"integrity"`

	// MultipartCopyThreshold: objects larger than this are copied with
	// UploadPartCopy. Zero means MaxSingleCopySize (5 GiB); tests lower it.
	MultipartCopyThreshold int64 `yaml:"-"`
	// CopyPartSize is the part size of multipart copies; zero means 512 MiB.
	CopyPartSize int64 `yaml:"-"`
}

// String never prints secrets.
func (c Config) String() string {
	return fmt.Sprintf("storage.Config{provider=%s endpoint=%q region=%q bucket=%q prefix=%q credentials=%s}",
		c.provider(), c.EndpointURL, c.Region, c.Bucket, c.Prefix, c.credentialSource())
}

func (c Config) credentialSource() string {
	if c.AccessKeyID != "" {
		return "explicit"
	}
	return "default-chain"
}

var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// ValidateBucket reports whether name is a usable bucket name.
func ValidateBucket(name string) error {
	if name == "" {
		return &ConfigError{Field: "bucket", Reason: "is empty: set the bucket name"}
	}
	if !bucketRE.MatchString(name) || strings.Contains(name, "..") {
		return &ConfigError{Field: "bucket", Reason: fmt.Sprintf("%q is not a valid bucket name: use 3-63 lowercase letters, digits, dots and hyphens", name)}
	}
	return nil
}

func (c Config) useSSL() bool    { return c.UseSSL == nil || *c.UseSSL }
func (c Config) verifySSL() bool { return c.VerifySSL == nil || *c.VerifySSL }
func (c Config) integrity() bool { return c.Integrity == nil || *c.Integrity }

func (c Config) provider() Provider {
	if c.Provider != "" {
		return c.Provider
	}
	return DetectProvider(c.EndpointURL)
}

// DetectProvider guesses the provider from an endpoint URL's host.
func DetectProvider(endpoint string) Provider {
	if endpoint == "" {
		return ProviderAWS
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return ProviderGeneric
	}
	h := u.Hostname()
	switch {
	case strings.HasSuffix(h, ".amazonaws.com"):
		return ProviderAWS
	case strings.HasSuffix(h, ".r2.cloudflarestorage.com"):
		return ProviderR2
	case strings.HasSuffix(h, ".backblazeb2.com"):
		return ProviderB2
	case strings.HasSuffix(h, ".digitaloceanspaces.com"):
		return ProviderSpaces
	}
	return ProviderGeneric
}

// validateProfile checks everything but the bucket.
func (c Config) validateProfile() error {
	switch c.provider() {
	case ProviderAWS, ProviderR2, ProviderB2, ProviderSpaces, ProviderMinIO, ProviderVersity, ProviderGeneric:
	default:
		return &ConfigError{Field: "provider", Reason: fmt.Sprintf("%q is unknown: use one of aws, r2, b2, spaces, minio, versitygw, generic", c.Provider)}
	}
	if c.EndpointURL != "" {
		u, err := url.Parse(c.EndpointURL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return &ConfigError{Field: "endpoint_url", Reason: fmt.Sprintf("%q is not a URL with a scheme: write it as https://host[:port]", c.EndpointURL)}
		}
		if u.User != nil {
			return &ConfigError{Field: "endpoint_url", Reason: "must not contain credentials: set access_key_id and secret_access_key instead"}
		}
		if u.Scheme == "http" && c.useSSL() && c.UseSSL != nil {
			return &ConfigError{Field: "use_ssl", Reason: "is true but endpoint_url is http://: use https:// or set use_ssl: false"}
		}
		if u.Scheme == "https" && !c.useSSL() {
			return &ConfigError{Field: "use_ssl", Reason: "is false but endpoint_url is https://: use http:// or drop use_ssl"}
		}
	} else if c.provider() != ProviderAWS {
		return &ConfigError{Field: "endpoint_url", Reason: fmt.Sprintf("is required for provider %s", c.provider())}
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		return &ConfigError{Field: "secret_access_key", Reason: "access_key_id and secret_access_key must be set together (or both left empty for the default credential chain)"}
	}
	if c.SessionToken != "" && c.AccessKeyID == "" {
		return &ConfigError{Field: "session_token", Reason: "needs access_key_id and secret_access_key"}
	}
	if c.PresignedExpiry < 0 || c.PresignedExpiry > MaxPresignedExpiry {
		return &ConfigError{Field: "presigned_expiry", Reason: fmt.Sprintf("%s is out of range: use a duration between 1s and 168h (7 days, SigV4's limit)", c.PresignedExpiry)}
	}
	if c.MaxPoolConnections < 0 {
		return &ConfigError{Field: "max_pool_connections", Reason: fmt.Sprintf("%d is less than 1: use a positive number (default 10)", c.MaxPoolConnections)}
	}
	if c.Prefix != "" {
		if err := validatePrefix(c.Prefix); err != nil {
			return &ConfigError{Field: "prefix", Reason: err.Error()}
		}
	}
	return nil
}

func (c Config) presignedExpiry() time.Duration {
	if c.PresignedExpiry == 0 {
		return DefaultPresignedExpiry
	}
	return c.PresignedExpiry
}

func (c Config) poolSize() int {
	if c.MaxPoolConnections == 0 {
		return DefaultMaxPoolConnections
	}
	return c.MaxPoolConnections
}

// quirks is what differs between providers. Keep every provider difference here.
type quirks struct {
	// deleteIfMatch: DeleteObject honours If-Match (412 when the ETag
	// differs): AWS (general purpose buckets since 2025-09), versitygw and
	// Ceph. MinIO ignores the header and deletes anyway; R2, B2 and Spaces
	// do not document it. See DeleteIfUnchanged.
	deleteIfMatch bool
	// bulkDeleteIfMatch: DeleteObjects honours each object's ETag (AWS).
	// versitygw ignores it.
	bulkDeleteIfMatch bool
	// checksumWhenRequired turns off the SDK's default CRC32 on every
	// PutObject/UploadPart (aws-sdk-go-v2, 2025): B2, R2 and older MinIO
	// reject or mishandle it.
	checksumWhenRequired bool
	// equalParts: every part but the last must have the same size (R2).
	equalParts bool
	// pathStyle addresses buckets in the path (MinIO, versitygw, most
	// self-hosted servers have no wildcard DNS).
	pathStyle bool
	// defaultRegion when none is configured.
	defaultRegion string
	// crc32cHeader: parts and PutObjects carry x-amz-checksum-crc32c
	// (computed by ferry from the source bytes, before the SDK sees them)
	// instead of Content-MD5, and multipart uploads (not multipart copies:
	// see copyMultipart) are created with a FULL_OBJECT CRC32C that the
	// server checks at Complete, given every part's. Cheaper than
	// MD5 (one hash instead of two; docs/performance.md) but only where
	// flexible checksums are known to be verified: AWS, and versitygw
	// (v1.8.0 answers BadDigest to a wrong CRC32C on PutObject, UploadPart
	// and a FULL_OBJECT Complete: storage.TestVersityVerifiesCRC32C).
	// Everyone else gets Content-MD5, which every provider here verifies.
	crc32cHeader bool
	// multipartETagsSince: the provider gives an object uploaded in parts
	// the ETag AWS does (the MD5 of the parts' MD5s, "-", the number of
	// parts) when it was written at or after this time (zero: always), so
	// a streamed copy can check the bytes it reads against it
	// (S3.ETagCheck). noMultipartETags: not known to, never checked.
	multipartETagsSince time.Time
	noMultipartETags    bool
}

// multipartETags reports whether an object written at modified has a
// multipart ETag ferry can recompute (see quirks.multipartETagsSince).
func (q quirks) multipartETags(modified time.Time) bool {
	return !q.noMultipartETags && !modified.Before(q.multipartETagsSince)
}

// Multipart ETags: AWS, Spaces (Ceph RGW), MinIO (unencrypted objects) and
// versitygw compute the MD5 of the part MD5s; R2 does for uploads created
// after 2023-06-21 (its docs); B2 does not document it, so its multipart
// objects are copied unverified. A generic server that computes them
// otherwise fails such copies with the check named (docs/reliability.md).
var providerTable = map[Provider]quirks{
	ProviderAWS:     {defaultRegion: "us-east-1", crc32cHeader: true, deleteIfMatch: true, bulkDeleteIfMatch: true},
	ProviderR2:      {checksumWhenRequired: true, equalParts: true, defaultRegion: "auto", multipartETagsSince: time.Date(2023, 6, 22, 0, 0, 0, 0, time.UTC)},
	ProviderB2:      {checksumWhenRequired: true, defaultRegion: "us-west-004", noMultipartETags: true},
	ProviderSpaces:  {checksumWhenRequired: true, defaultRegion: "us-east-1"},
	ProviderMinIO:   {checksumWhenRequired: true, pathStyle: true, defaultRegion: "us-east-1"},
	ProviderVersity: {checksumWhenRequired: true, pathStyle: true, defaultRegion: "us-east-1", deleteIfMatch: true, crc32cHeader: true},
	ProviderGeneric: {checksumWhenRequired: true, pathStyle: true, defaultRegion: "us-east-1", deleteIfMatch: true},
}
