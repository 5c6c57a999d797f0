package faulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferryhq/ferry/internal/ferrybin"
	"github.com/ferryhq/ferry/internal/testenv"
)

// The two commands of issue 11 that destroyed data, run word for word
// through the real ferry binary against a worker process, versitygw and
// redis-server. "a" and "b" are the test's buckets.

// TestSafetyMigratePhotosDeleteExtra: `ferry migrate s3://a/photos
// s3://b/photos --delete-extra` must not delete b/photos-2019/... and
// b/photos.bak: "photos" is the directory photos/ on both sides. Its dry
// run lists exactly the extra under photos/ and writes nothing.
func TestSafetyMigratePhotosDeleteExtra(t *testing.T) {
	requireFaults(t)
	t.Parallel()
	s := newSuite(t)
	s.child(nil)
	a, b := s.bucket, s.s3.Bucket(t)
	for _, k := range []string{"photos/1.jpg", "photos/2.jpg", "photos-2019/src-only.jpg", "photos.txt"} {
		s.putIn(a, k, "a:"+k)
	}
	keep := []string{"photos-2019/x.jpg", "photos-2019/y/z.jpg", "photos.bak", "photos-other", "other/photos/1.jpg"}
	for _, k := range append(slices.Clone(keep), "photos/extra.jpg") {
		s.putIn(b, k, "b:"+k)
	}
	ferry := s.ferryCLI(t)
	// The extras must be older than the migration by more than the clock
	// allowance of --delete-extra, or it would keep them as new.
	time.Sleep(testenv.ExtrasSettle)

	// The dry run lists what --delete-extra would delete: photos/extra.jpg only.
	if rep := ferry("migrate", "s3://"+a+"/photos", "s3://"+b+"/photos", "--delete-extra", "--dry-run", "--queue", s.queue, "--wait", "--json"); rep != nil {
		if got, want := fmt.Sprint(rep["delete_sample"]), "[photos/extra.jpg]"; got != want || rep["would_delete"] != float64(1) {
			t.Errorf("dry run would delete %v (%v), want %s (1)", got, rep["would_delete"], want)
		}
		if rep["would_copy"] != float64(2) {
			t.Errorf("dry run would copy %v, want 2 (photos/1.jpg, photos/2.jpg)", rep["would_copy"])
		}
	}
	if got := s.keys(b); !slices.Equal(got, sorted(append(slices.Clone(keep), "photos/extra.jpg"))) {
		t.Errorf("the dry run changed bucket b: %v", got)
	}

	// The command of the issue, word for word.
	ferry("migrate", "s3://"+a+"/photos", "s3://"+b+"/photos", "--delete-extra", "--queue", s.queue, "--wait", "--json")
	want := sorted(append(slices.Clone(keep), "photos/1.jpg", "photos/2.jpg"))
	if got := s.keys(b); !slices.Equal(got, want) {
		t.Errorf("after migrate --delete-extra bucket b holds\n  %v\nwant\n  %v\n(lost: %v; unexpected: %v)", got, want, minus(want, got), minus(got, want))
	}
	for _, k := range keep {
		if got := s.getIn(b, k); got != "b:"+k {
			t.Errorf("b/%s = %q, want its old content", k, got)
		}
	}
}

// TestSafetyDeleteLogs2024Recursive: `ferry delete s3://b/logs/2024
// --recursive` must not delete logs/2024-old/...: "logs/2024" is the
// directory logs/2024/. A raw prefix is asked for with a glob
// (s3://b/logs/2024*), and --dry-run lists without deleting.
func TestSafetyDeleteLogs2024Recursive(t *testing.T) {
	requireFaults(t)
	t.Parallel()
	s := newSuite(t)
	s.child(nil)
	b := s.bucket
	gone := []string{"logs/2024/01.log", "logs/2024/02/03.log"}
	keep := []string{"logs/2024-old/01.log", "logs/2024-old/x/y.log", "logs/2024.txt", "logs/20240.log", "logs/2025/01.log"}
	// (No object "logs/2024" itself: versitygw's posix backend cannot
	// hold a key that is also a directory.)
	for _, k := range append(slices.Clone(gone), keep...) {
		s.putIn(b, k, "b:"+k)
	}
	ferry := s.ferryCLI(t)

	if rep := ferry("delete", "s3://"+b+"/logs/2024", "--recursive", "--dry-run", "--queue", s.queue, "--wait", "--json"); rep != nil {
		if got, want := fmt.Sprint(rep["delete_sample"]), fmt.Sprint(gone); got != want || rep["would_delete"] != float64(len(gone)) {
			t.Errorf("dry run would delete %v (%v), want %s", got, rep["would_delete"], want)
		}
	}
	if got := s.keys(b); len(got) != len(gone)+len(keep) {
		t.Errorf("the dry run deleted something: %v", got)
	}

	// The command of the issue, word for word.
	ferry("delete", "s3://"+b+"/logs/2024", "--recursive", "--queue", s.queue, "--wait", "--json")
	if got, want := s.keys(b), sorted(keep); !slices.Equal(got, want) {
		t.Errorf("after delete --recursive bucket holds\n  %v\nwant\n  %v\n(lost: %v; left: %v)", got, want, minus(want, got), minus(got, want))
	}

	// The raw prefix, asked for with a glob, selects logs/2024-old/ too.
	ferry("delete", "s3://"+b+"/logs/2024-*", "--recursive", "--queue", s.queue, "--wait", "--json")
	if got, want := s.keys(b), sorted([]string{"logs/2024.txt", "logs/20240.log", "logs/2025/01.log"}); !slices.Equal(got, want) {
		t.Errorf("after delete logs/2024-* bucket holds %v, want %v", got, want)
	}
}

// ferryCLI builds the ferry binary and returns a func running it with a
// config whose default profile and Redis are the suite's: it returns the
// task result of a `--wait --json` run that completed, or nil after
// reporting why not.
func (s *suite) ferryCLI(t *testing.T) func(argv ...string) map[string]any {
	t.Helper()
	dir := t.TempDir()
	p := s.profiles()["default"]
	config := ferrybin.WriteConfig(t, dir, "redis://"+s.redis.Addr+"/0", map[string]ferrybin.Profile{"default": {
		Endpoint: p.EndpointURL, Region: p.Region, AccessKey: s.s3.AccessKey, SecretKey: s.s3.SecretKey}}, "")
	cmd := ferrybin.Cmd{Bin: buildFerry(t), Dir: dir, Env: []string{"FERRY_CONFIG=" + config}, Timeout: 2 * time.Minute}
	return func(argv ...string) map[string]any {
		t.Helper()
		r := cmd.Run(t, "", argv...)
		lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
		var final struct {
			State  string         `json:"state"`
			Result map[string]any `json:"result"`
		}
		if r.Code != 0 || len(lines) != 2 || json.Unmarshal([]byte(lines[1]), &final) != nil || final.State != "completed" {
			t.Errorf("ferry %s: want a completed task, got %s", strings.Join(argv, " "), r)
			return nil
		}
		return final.Result
	}
}

func (s *suite) putIn(bucket, key, content string) {
	s.t.Helper()
	_, err := s.sc.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: strings.NewReader(content)})
	if err != nil {
		s.t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}

func (s *suite) getIn(bucket, key string) string {
	s.t.Helper()
	out, err := s.sc.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer out.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(out.Body)
	return buf.String()
}

// keys lists every key of bucket, sorted.
func (s *suite) keys(bucket string) []string {
	s.t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.sc, &s3.ListObjectsV2Input{Bucket: &bucket})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			s.t.Fatalf("list %s: %v", bucket, err)
		}
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return sorted(keys)
}

func sorted(s []string) []string { slices.Sort(s); return s }

// minus is a without the elements of b.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
