package storage_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/storage"
)

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	f := false
	tr := true
	base := storage.Config{Bucket: "my-bucket", EndpointURL: "http://127.0.0.1:9000", Provider: storage.ProviderMinIO,
		AccessKeyID: "AKIA", SecretAccessKey: "supersecret"}
	for _, tc := range []struct {
		desc   string
		mutate func(*storage.Config)
		field  string
	}{
		{"empty bucket", func(c *storage.Config) { c.Bucket = "" }, "bucket"},
		{"bad bucket", func(c *storage.Config) { c.Bucket = "My_Bucket" }, "bucket"},
		{"endpoint without scheme", func(c *storage.Config) { c.EndpointURL = "127.0.0.1:9000" }, "endpoint_url"},
		{"endpoint with credentials", func(c *storage.Config) { c.EndpointURL = "http://u:p@host" }, "endpoint_url"},
		{"expiry over 7 days", func(c *storage.Config) { c.PresignedExpiry = 8 * 24 * time.Hour }, "presigned_expiry"},
		{"negative pool", func(c *storage.Config) { c.MaxPoolConnections = -1 }, "max_pool_connections"},
		{"unknown provider", func(c *storage.Config) { c.Provider = "ceph" }, "provider"},
		{"half credentials", func(c *storage.Config) { c.SecretAccessKey = "" }, "secret_access_key"},
		{"token alone", func(c *storage.Config) { c.AccessKeyID, c.SecretAccessKey, c.SessionToken = "", "", "t" }, "session_token"},
		{"use_ssl vs http", func(c *storage.Config) { c.UseSSL = &tr }, "use_ssl"},
		{"use_ssl false vs https", func(c *storage.Config) { c.EndpointURL = "https://h"; c.UseSSL = &f }, "use_ssl"},
		{"non-aws without endpoint", func(c *storage.Config) { c.EndpointURL = "" }, "endpoint_url"},
		{"bad prefix", func(c *storage.Config) { c.Prefix = "../up" }, "prefix"},
	} {
		cfg := base
		tc.mutate(&cfg)
		_, err := storage.New(context.Background(), cfg)
		var ce *storage.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%s: New = %v; want a *ConfigError for %s", tc.desc, err, tc.field)
			continue
		}
		if strings.Contains(err.Error(), "supersecret") {
			t.Errorf("%s: error leaks the secret: %v", tc.desc, err)
		}
	}
	if _, err := storage.New(context.Background(), base); err != nil {
		t.Errorf("valid config: %v", err)
	}
	if s := base.String(); strings.Contains(s, "supersecret") || strings.Contains(s, "AKIA") {
		t.Errorf("Config.String leaks credentials: %s", s)
	}
}

func TestDetectProvider(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]storage.Provider{
		"":                                       storage.ProviderAWS,
		"https://s3.eu-west-1.amazonaws.com":     storage.ProviderAWS,
		"https://acct.r2.cloudflarestorage.com":  storage.ProviderR2,
		"https://s3.us-west-004.backblazeb2.com": storage.ProviderB2,
		"https://nyc3.digitaloceanspaces.com":    storage.ProviderSpaces,
		"http://127.0.0.1:9000":                  storage.ProviderGeneric,
	} {
		if got := storage.DetectProvider(in); got != want {
			t.Errorf("DetectProvider(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestPartSizeFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc       string
		size, want int64
		got        int64
	}{
		{"default", 1 << 30, 0, storage.DefaultPartSize},
		{"raised to the minimum", 1 << 30, 1 << 20, storage.MinPartSize},
		{"raised to fit 10,000 parts", 1 << 40, 16 << 20, 105 << 20},
		{"unknown size", -1, 8 << 20, 8 << 20},
	} {
		if got := storage.PartSizeFor(tc.size, tc.want); got != tc.got {
			t.Errorf("%s: PartSizeFor(%d, %d) = %d, want %d", tc.desc, tc.size, tc.want, got, tc.got)
		}
	}
}

func TestBufferPoolBudget(t *testing.T) {
	t.Parallel()
	p := storage.NewBufferPool(3 << 20)
	ctx := context.Background()
	a, _ := p.Get(ctx, 1<<20)
	b, _ := p.Get(ctx, 2<<20)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := p.Get(short, 1<<20); err == nil {
		t.Fatal("Get beyond the budget did not wait")
	}
	got := make(chan []byte)
	go func() { c, _ := p.Get(ctx, 1<<20); got <- c }()
	p.Put(a)
	if c := <-got; len(c) != 1<<20 {
		t.Errorf("reused buffer has %d bytes", len(c))
	}
	p.Put(b)
	// b is cached and reused; nothing can exceed the whole budget.
	if _, err := p.Get(ctx, 2<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(ctx, 4<<20); err == nil || !storage.IsPermanent(err) {
		t.Errorf("a buffer larger than the whole budget: %v; want a permanent error", err)
	}
}

func TestVerifyCopy(t *testing.T) {
	t.Parallel()
	md5a, md5b := "0cc175b9c0f1b6a831c399e269772661", "92eb5ffee6ae2fec3ad71c777531578f"
	for _, tc := range []struct {
		desc     string
		src, dst storage.StoredFile
		ok       bool
	}{
		{"same size and MD5", storage.StoredFile{Size: 1, ETag: md5a}, storage.StoredFile{Size: 1, ETag: md5a}, true},
		{"other size", storage.StoredFile{Size: 1, ETag: md5a}, storage.StoredFile{Size: 2, ETag: md5a}, false},
		{"other MD5", storage.StoredFile{Size: 1, ETag: md5a}, storage.StoredFile{Size: 1, ETag: md5b}, false},
		{"multipart ETag is opaque", storage.StoredFile{Size: 1, ETag: md5a}, storage.StoredFile{Size: 1, ETag: md5b + "-2"}, true},
		{"KMS ETag is opaque", storage.StoredFile{Size: 1, ETag: md5a, Encryption: "aws:kms"}, storage.StoredFile{Size: 1, ETag: md5b, Encryption: "aws:kms"}, true},
		{"SSE-C ETag is opaque", storage.StoredFile{Size: 1, ETag: md5a}, storage.StoredFile{Size: 1, ETag: md5b, Encryption: "SSE-C"}, true},
		{"SSE-S3 ETag is an MD5", storage.StoredFile{Size: 1, ETag: md5a, Encryption: "AES256"}, storage.StoredFile{Size: 1, ETag: md5b, Encryption: "AES256"}, false},
	} {
		if err := storage.VerifyCopy(tc.src, tc.dst); (err == nil) != tc.ok {
			t.Errorf("%s: VerifyCopy = %v, want ok=%v", tc.desc, err, tc.ok)
		}
	}
}
