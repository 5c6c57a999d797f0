package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"
)

// AwkwardKey is an object key S3 allows that URL encoding, header encoding,
// Unicode normalisation or a shell easily gets wrong.
type AwkwardKey struct {
	Name string // what it tests, for failure messages
	Key  string
}

// MaxKeyLen is S3's limit on a key's length in bytes.
const MaxKeyLen = 1024

// AwkwardKeys is issue 17's table of keys that every path must handle: one
// list, so the CLI test of every command and the storage test of the
// multipart copy run the same keys. Every key sits at the bucket's root (a
// leading space is the key's first byte; the long key is exactly MaxKeyLen
// bytes). Keys that differ only in one way come in adjacent pairs — "+" and
// space, NFC and NFD "é", two directories "dir+x/" and "dir x/" — so a test
// that deletes every other key deletes one of each pair and must find the
// other untouched. No two keys are equal, and none is a prefix-directory of
// another.
func AwkwardKeys() []AwkwardKey {
	// Segments stay under 255 bytes: versitygw's posix backend stores each
	// one as a file name.
	longDir := "long key+é/"
	seg := strings.Repeat("k", 200)
	long := longDir
	for len(long)+len(seg)+1 < MaxKeyLen {
		long += seg + "/"
	}
	long += strings.Repeat("z", MaxKeyLen-len(long))
	return []AwkwardKey{
		{"plus", "a+b.txt"},
		{"space", "a b.txt"},
		{"NFC é", "caf\u00e9.txt"},
		{"NFD é", "cafe\u0301.txt"},
		{"dir with plus", "dir+x/f.txt"},
		{"dir with space", "dir x/f.txt"},
		{"encoded space", "a%20b.txt"},
		{"encoded slash", "a%2Fb.txt"},
		{"question mark", "what?.txt"},
		{"hash", "#hash.txt"},
		{"ampersand and equals", "a&b=c.txt"},
		{"semicolon", "a;b.txt"},
		{"tilde", "~tilde.txt"},
		{"percent", "100%.txt"},
		{"leading space", " lead.txt"},
		{"trailing space", "trail.txt "},
		{"emoji", "\U0001F600/\U0001F680 rocket.txt"},
		{"1,024 bytes", long},
	}
}

// CheckBucket fails t unless bucket holds exactly the keys of want, each
// with want's bytes (compared by SHA-256), read with the plain SDK. step
// starts the messages. A key that went to its twin ("a+b" to "a b", NFC to
// NFD) shows as one key missing and the other with the wrong bytes.
func (s *S3Server) CheckBucket(t testing.TB, step, bucket string, want map[string][]byte) {
	t.Helper()
	c := s.Client()
	ctx := context.Background()
	var got []string
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &bucket})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("%s: list %s: %v", step, bucket, err)
		}
		for _, o := range page.Contents {
			got = append(got, *o.Key)
		}
	}
	if diff := cmp.Diff(slices.Sorted(maps.Keys(want)), got); diff != "" {
		t.Errorf("%s: keys of %s (-want +got):\n%s", step, bucket, diff)
	}
	for _, k := range got {
		data, ok := want[k]
		if !ok {
			continue
		}
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &k})
		if err != nil {
			t.Errorf("%s: get %s/%q: %v", step, bucket, k, err)
			continue
		}
		h := sha256.New()
		_, err = io.Copy(h, out.Body)
		_ = out.Body.Close()
		if sum := sha256.Sum256(data); err != nil || !bytes.Equal(h.Sum(nil), sum[:]) {
			t.Errorf("%s: %s/%q does not hold its own bytes (SHA-256 %x, want %x; %v)", step, bucket, k, h.Sum(nil), sum, err)
		}
	}
}
