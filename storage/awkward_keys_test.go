package storage_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
)

// TestAwkwardKeys: issue 17's table of keys (testenv.AwkwardKeys) through
// the multipart copy — UploadPartCopy, whose x-amz-copy-source carries the
// key on every part — and a move built on it, with the threshold lowered to
// 5 MiB (not a setting of the CLI, so cmd/ferry's TestAwkwardKeys cannot
// reach it). Each key keeps its own bytes, the copies are multipart, the
// move's source bucket ends empty and the first source is untouched.
func TestAwkwardKeys(t *testing.T) {
	t.Parallel()
	srv := headerServer(t)
	bs := copyBuckets(t, srv, 3)
	a, b, c := bs[0], bs[1], bs[2]
	ctx := context.Background()

	bulk := randBytes(t, storage.MinPartSize+1024) // two parts
	want := map[string][]byte{}
	for i, k := range testenv.AwkwardKeys() {
		want[k.Key] = append(fmt.Appendf(nil, "#%d %s %q\n", i, k.Name, k.Key), bulk...)
		srv.PutObject(t, a.Bucket(), k.Key, want[k.Key], nil)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, 4)
	for key := range want {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := b.CopyFrom(ctx, a, key, key, nil)
			if err == nil {
				_, err = c.MoveFrom(ctx, b, key, key, &storage.CopyOptions{Metadata: map[string]string{"moved": "yes"}})
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%q: %w", key, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	srv.CheckBucket(t, "source", a.Bucket(), want)
	srv.CheckBucket(t, "move source", b.Bucket(), nil)
	srv.CheckBucket(t, "copied and moved", c.Bucket(), want)
	for key := range want {
		out, err := srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(c.Bucket()), Key: &key})
		if err != nil || !strings.HasSuffix(strings.Trim(*out.ETag, `"`), "-2") || out.Metadata["moved"] != "yes" {
			t.Errorf("%q: want a 2-part copy with the move's metadata: %v %v", key, out, err)
		}
	}
}
