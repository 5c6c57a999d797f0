package storage_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ferryhq/ferry/storage"
)

// A storage on an S3-compatible server. Credentials may also come from the
// environment or the shared credentials file when left empty.
func ExampleNew() {
	ctx := context.Background()
	s, err := storage.New(ctx, storage.Config{
		Bucket:          "uploads",
		EndpointURL:     "http://127.0.0.1:9000",
		Provider:        storage.ProviderMinIO,
		AccessKeyID:     os.Getenv("S3_ACCESS_KEY"),
		SecretAccessKey: os.Getenv("S3_SECRET_KEY"),
		Prefix:          "2026/",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	f, err := s.PutBytes(ctx, "hello.txt", []byte("hello"), &storage.PutOptions{Headers: storage.Headers{ContentType: "text/plain"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(f.Key, f.Size)
	url, _ := s.URL(ctx, "hello.txt", &storage.URLOptions{Expires: 15 * time.Minute})
	fmt.Println(url)
}

// Invalid configuration fails at construction with the field to fix.
func ExampleConfigError() {
	_, err := storage.New(context.Background(), storage.Config{Bucket: "uploads", EndpointURL: "localhost:9000", Provider: storage.ProviderMinIO})
	fmt.Println(err)
	// Output: storage config: endpoint_url: "localhost:9000" is not a URL with a scheme: write it as https://host[:port]
}

// PutLarge uploads a stream of any length in concurrent parts with bounded
// memory, reporting progress after each part.
func ExampleS3_PutLarge() {
	ctx := context.Background()
	s, err := storage.New(ctx, storage.Config{Bucket: "uploads", EndpointURL: "http://127.0.0.1:9000", Provider: storage.ProviderMinIO})
	if err != nil {
		fmt.Println(err)
		return
	}
	body := strings.NewReader("a stream of unknown length")
	_, err = s.PutLarge(ctx, "big.bin", body, &storage.LargeOptions{
		PartSize:     16 << 20,
		Concurrency:  4,
		ProgressFunc: func(done, total int64) { fmt.Println(done, "bytes done") },
	})
	if err != nil {
		fmt.Println(err)
	}
}

// List pages transparently; break out of the loop to stop early.
func ExampleS3_List() {
	ctx := context.Background()
	s, err := storage.New(ctx, storage.Config{Bucket: "uploads", EndpointURL: "http://127.0.0.1:9000", Provider: storage.ProviderMinIO})
	if err != nil {
		fmt.Println(err)
		return
	}
	for f, err := range s.List(ctx, "reports/", 100) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(f.Key, f.Size, f.LastModified)
	}
}
