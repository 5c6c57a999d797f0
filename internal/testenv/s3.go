package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/ferryhq/ferry/storage"
)

// S3Server is an S3 server for tests.
type S3Server struct {
	Endpoint  string // http://127.0.0.1:port
	AccessKey string
	SecretKey string
	Region    string
	// Real is false when the server is the in-process gofakes3 fallback.
	Real bool
}

var (
	s3Once sync.Once
	s3Srv  *S3Server
	s3Err  error
)

// S3 returns the shared S3 server of this test binary, starting it on first use.
func S3(t testing.TB) *S3Server {
	t.Helper()
	s3Once.Do(func() { s3Srv, s3Err = startS3() })
	if s3Err != nil {
		t.Fatalf("testenv: %v", s3Err)
	}
	return s3Srv
}

// Client returns a plain SDK client for the server, for test setup and for
// checking results independently of ferry's storage package.
func (s *S3Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		// Like ferry's non-AWS profiles: the SDK's default CRC32 trailers are
		// not for every S3-compatible server.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// Profile is a ferry profile (a storage.Config without a bucket) on the
// server, as a worker or a test configures it.
func (s *S3Server) Profile() storage.Config {
	return storage.Config{EndpointURL: s.Endpoint, AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey,
		Region: s.Region, Provider: storage.ProviderGeneric}
}

// Bucket creates a bucket with a unique name and removes it (with every
// object and multipart upload in it) when the test ends.
func (s *S3Server) Bucket(t testing.TB) string {
	t.Helper()
	name := UniqueName("ferry")
	c := s.Client()
	ctx := context.Background()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		t.Fatalf("testenv: create bucket %s: %v", name, err)
	}
	t.Cleanup(func() { EmptyAndDeleteBucket(ctx, c, name) })
	return name
}

// EmptyAndDeleteBucket aborts uploads, deletes objects, then the bucket.
// Errors are ignored: it is cleanup.
func EmptyAndDeleteBucket(ctx context.Context, c *s3.Client, bucket string) {
	mp, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if err == nil {
		for _, u := range mp.Uploads {
			_, _ = c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &bucket, Key: u.Key, UploadId: u.UploadId})
		}
	}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &bucket})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			break
		}
		if len(page.Contents) == 0 {
			continue
		}
		ids := make([]types.ObjectIdentifier, 0, len(page.Contents))
		for _, o := range page.Contents {
			ids = append(ids, types.ObjectIdentifier{Key: o.Key})
		}
		_, _ = c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &bucket, Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
	}
	_, _ = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &bucket})
}

var (
	otherOnce sync.Once
	otherSrv  *S3Server
	otherErr  error
)

// OtherS3 returns a second S3 server of this test binary, started on first
// use: its own process, port and data, so copies between it and S3(t) go
// between two endpoints whatever spelling of an endpoint ferry normalises.
// It is always started here (FERRY_TEST_S3_ENDPOINT names only the first).
func OtherS3(t testing.TB) *S3Server {
	t.Helper()
	otherOnce.Do(func() { otherSrv, otherErr = startLocalS3() })
	if otherErr != nil {
		t.Fatalf("testenv: second S3 server: %v", otherErr)
	}
	return otherSrv
}

func startS3() (*S3Server, error) {
	if ep := os.Getenv(EnvS3Endpoint); ep != "" {
		return &S3Server{Endpoint: ep, AccessKey: os.Getenv(EnvS3AccessKey),
			SecretKey: os.Getenv(EnvS3SecretKey), Region: "us-east-1", Real: true}, nil
	}
	return startLocalS3()
}

// startLocalS3 starts versitygw, or gofakes3 when there is none and real
// servers are not required.
func startLocalS3() (*S3Server, error) {
	bin := VersitygwPath()
	if bin == "" {
		if RealRequired() {
			return nil, fmt.Errorf("versitygw not found in ./bin or on PATH and %s=1 forbids the gofakes3 fallback: run `make tools` or set %s", EnvReal, EnvS3Endpoint)
		}
		ts := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
		onStop(ts.Close)
		return &S3Server{Endpoint: ts.URL, AccessKey: "fake", SecretKey: "fakesecret", Region: "us-east-1"}, nil
	}
	p, err := StartVersitygw(bin, "")
	if err != nil {
		return nil, err
	}
	onStop(p.Stop)
	return &p.S3Server, nil
}

// VersitygwPath finds the pinned versitygw: $FERRY_VERSITYGW, <module>/bin,
// then PATH. It returns "" when there is none.
func VersitygwPath() string {
	if p := os.Getenv("FERRY_VERSITYGW"); p != "" {
		return p
	}
	if root := moduleRoot(); root != "" {
		p := filepath.Join(root, "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	return ""
}

// VersitygwProcess is a versitygw child process with a posix backend.
type VersitygwProcess struct {
	S3Server
	dir string
	cmd *exec.Cmd
}

// StartVersitygw starts versitygw on a free 127.0.0.1 port with its posix
// backend in dir (a new temp dir when empty) and waits until it answers S3.
func StartVersitygw(bin, dir string) (*VersitygwProcess, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "ferry-s3-")
		if err != nil {
			return nil, fmt.Errorf("versitygw temp dir: %w", err)
		}
		dir = d
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := &VersitygwProcess{dir: dir, S3Server: S3Server{
		Endpoint: "http://" + addr, AccessKey: "ferrytest", SecretKey: UniqueName("secret"),
		Region: "us-east-1", Real: true}}
	logf, err := os.Create(filepath.Join(os.TempDir(), "ferry-versitygw-"+strconv.Itoa(port)+".log"))
	if err != nil {
		return nil, fmt.Errorf("versitygw log: %w", err)
	}
	cmd := exec.Command(bin, "--port", addr, "--region", p.Region, "posix", dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+p.AccessKey, "ROOT_SECRET_KEY="+p.SecretKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start versitygw: %w", err)
	}
	p.cmd = cmd
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := waitTCP(ctx, addr); err != nil {
		p.Stop()
		return nil, fmt.Errorf("versitygw (log %s): %w", logf.Name(), err)
	}
	// The port answering is not enough: wait for a real S3 answer.
	c := p.Client()
	for {
		_, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
		if err == nil {
			return p, nil
		}
		if ctx.Err() != nil {
			p.Stop()
			return nil, fmt.Errorf("versitygw never answered ListBuckets (log %s): %w", logf.Name(), errors.Join(err, ctx.Err()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the process and removes its data.
func (p *VersitygwProcess) Stop() {
	stopCmd(p.cmd)
	p.cmd = nil
	_ = os.RemoveAll(p.dir)
}
