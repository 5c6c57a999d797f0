package storage

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3API is exactly the part of *s3.Client that storage calls, in the SDK's
// own signatures, so *s3.Client satisfies it and unit tests can fake it.
type S3API interface {
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	DeleteObjects(context.Context, *s3.DeleteObjectsInput, ...func(*s3.Options)) (*s3.DeleteObjectsOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	CopyObject(context.Context, *s3.CopyObjectInput, ...func(*s3.Options)) (*s3.CopyObjectOutput, error)
	CreateMultipartUpload(context.Context, *s3.CreateMultipartUploadInput, ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	UploadPart(context.Context, *s3.UploadPartInput, ...func(*s3.Options)) (*s3.UploadPartOutput, error)
	UploadPartCopy(context.Context, *s3.UploadPartCopyInput, ...func(*s3.Options)) (*s3.UploadPartCopyOutput, error)
	ListParts(context.Context, *s3.ListPartsInput, ...func(*s3.Options)) (*s3.ListPartsOutput, error)
	CompleteMultipartUpload(context.Context, *s3.CompleteMultipartUploadInput, ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(context.Context, *s3.AbortMultipartUploadInput, ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
	HeadBucket(context.Context, *s3.HeadBucketInput, ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
	ListMultipartUploads(context.Context, *s3.ListMultipartUploadsInput, ...func(*s3.Options)) (*s3.ListMultipartUploadsOutput, error)
}

// Client is one SDK client for one profile (endpoint, credentials,
// provider). It is safe for concurrent use; open a storage per bucket on it
// with Bucket, which is cheap.
type Client struct {
	cfg     Config
	quirks  quirks
	api     S3API
	presign *s3.PresignClient
	http    *awshttp.BuildableClient
	closed  atomic.Bool
}

// NewClient validates cfg (all but Bucket) and builds the SDK client.
// Credentials resolve in the seed's order: explicit fields, then the SDK's
// default chain (environment, shared credentials file, IAM role).
func NewClient(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.validateProfile(); err != nil {
		return nil, err
	}
	q := providerTable[cfg.provider()]
	pool := cfg.poolSize()
	// The cap is on requests in flight (inFlight), not on connections: a
	// connection the server is closing must not hold a transfer's turn.
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConnsPerHost = pool
		t.MaxIdleConns = pool * 2
		if !cfg.verifySSL() {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the user asked for verify_ssl: false
		}
	})
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithHTTPClient(httpClient),
		// Few SDK retries, without the client-side retry quota: a long
		// outage is carried by task retries and checkpoints, and the quota
		// would otherwise fail healthy requests with "retry quota exceeded".
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 4
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)))
	}
	if q.checksumWhenRequired {
		opts = append(opts,
			awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
			awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = q.defaultRegion
	}
	// Wrapped after loading: the loader tunes the buildable client (a CA
	// bundle from the environment, for one).
	awsCfg.HTTPClient = newInFlight(awsCfg.HTTPClient, pool)
	api := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.EndpointURL != "" {
			o.BaseEndpoint = aws.String(strings.TrimRight(cfg.EndpointURL, "/"))
		}
		o.UsePathStyle = q.pathStyle || cfg.ForcePathStyle
		o.EndpointOptions.DisableHTTPS = !cfg.useSSL()
	})
	return &Client{cfg: cfg, quirks: q, api: api, presign: s3.NewPresignClient(api), http: httpClient}, nil
}

// NewClientWithAPI builds a Client around a given S3API (a fake, in unit
// tests). URL is unavailable on it.
func NewClientWithAPI(cfg Config, api S3API) (*Client, error) {
	if err := cfg.validateProfile(); err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, quirks: providerTable[cfg.provider()], api: api}, nil
}

// Provider returns the provider in effect (configured or detected).
func (c *Client) Provider() Provider { return c.cfg.provider() }

// Integrity reports whether the profile checks bytes (Config.Integrity):
// callers that can learn an object's checksum before it is written (a
// file, hashed first) record it then.
func (c *Client) Integrity() bool { return c.cfg.integrity() }

// Bucket opens a storage on bucket with the profile's prefix.
func (c *Client) Bucket(bucket string) (*S3, error) {
	if err := ValidateBucket(bucket); err != nil {
		return nil, err
	}
	return &S3{c: c, bucket: bucket, prefix: normPrefix(c.cfg.Prefix)}, nil
}

// Close releases idle connections. Storages opened on the client fail with
// ErrClosed afterwards.
func (c *Client) Close() error {
	c.closed.Store(true)
	if c.http != nil {
		c.http.GetTransport().CloseIdleConnections()
	}
	return nil
}

// New validates cfg (Bucket included) and opens a storage on its own client.
func New(ctx context.Context, cfg Config) (*S3, error) {
	if err := ValidateBucket(cfg.Bucket); err != nil {
		return nil, err
	}
	c, err := NewClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s, err := c.Bucket(cfg.Bucket)
	if err != nil {
		return nil, err
	}
	s.ownsClient = true
	return s, nil
}
