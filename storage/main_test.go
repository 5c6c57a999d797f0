package storage_test

import (
	"context"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// fakeServer is an in-process gofakes3 for the fast unit run.
func fakeServer(t *testing.T) *testenv.S3Server {
	t.Helper()
	ts := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(ts.Close)
	return &testenv.S3Server{Endpoint: ts.URL, AccessKey: "fake", SecretKey: "fakesecret", Region: "us-east-1"}
}

// profile returns a storage.Config for srv without a bucket.
func profile(srv *testenv.S3Server) storage.Config {
	return srv.Profile()
}

// newClient opens a client with cfg, closed when the test ends.
func newClient(t *testing.T, cfg storage.Config) *storage.Client {
	t.Helper()
	client, err := storage.NewClient(context.Background(), cfg)
	if err != nil {
		t.Fatalf("storage.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// open creates a fresh bucket and opens a storage on it with cfg's settings.
func open(t *testing.T, srv *testenv.S3Server, mutate func(*storage.Config)) *storage.S3 {
	t.Helper()
	cfg := profile(srv)
	cfg.Bucket = srv.Bucket(t)
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := storage.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("storage.New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
