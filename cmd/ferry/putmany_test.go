package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestPutManyFiles puts 510 small files and one of 6 MiB into a directory:
// the small ones go as two ferry:batch tasks (500 + 10), the large one as a
// put of its own; --wait prints the counts. A file the worker may not read
// fails alone, and --wait says which and why, exiting 3.
func TestPutManyFiles(t *testing.T) {
	t.Parallel()
	b := setupWorker(t)
	dir := filepath.Join(b.dir, "many")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var argv []string
	want := map[string][]byte{}
	for i := range 510 {
		name := fmt.Sprintf("f%03d.txt", i)
		data := fmt.Appendf(nil, "file %d\n", i)
		writeFile(t, filepath.Join(dir, name), string(data))
		argv = append(argv, filepath.Join("many", name))
		want["up/"+name] = data
	}
	big := randomBytes(t, 6<<20)
	writeFile(t, filepath.Join(dir, "big.bin"), string(big))
	argv = append(argv, filepath.Join("many", "big.bin"))
	want["up/big.bin"] = big

	r := b.ferry(t, append(append([]string{"put"}, argv...), b.url("up/"), "--queue", b.queue, "--wait")...)
	if r.Code != 0 {
		t.Fatalf("put of 511 files: %s", r)
	}
	// 510 small files are 10 batches of 51: tasks.SplitBatch cuts a job
	// into batches of at least SplitMinItems (50) so every worker slot
	// has work to the end.
	if !strings.Contains(r.Stdout, "enqueued 510 files in 10 ferry:batch tasks and 1 files of 5 MiB or more as ferry:put tasks of their own") {
		t.Errorf("enqueue line: %s", r)
	}
	if !regexp.MustCompile(`(?m)^511 files: 511 done \(.*\), 0 failed$`).MatchString(r.Stdout) {
		t.Errorf("no summary of 511 done: %s", r)
	}
	out, err := b.s3.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: &b.bucket, Prefix: strPtr("up/")})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != len(want) {
		t.Errorf("%d objects under up/; want %d", len(out.Contents), len(want))
	}
	for _, key := range []string{"up/f000.txt", "up/f509.txt", "up/big.bin"} {
		if got := b.getObject(t, key); string(got) != string(want[key]) {
			t.Errorf("%s: %d bytes differ from the file's", key, len(got))
		}
	}

	// A file outside the worker's --allow-dir fails alone.
	outside := filepath.Join(t.TempDir(), "outside.txt")
	writeFile(t, outside, "x")
	r = b.ferry(t, "put", filepath.Join("many", "f001.txt"), outside, b.url("two/"), "--queue", b.queue, "--max-retry", "1", "--wait")
	if r.Code != exitTaskFailed {
		t.Fatalf("want exit %d: %s", exitTaskFailed, r)
	}
	if !strings.Contains(r.Stdout, "2 files: 1 done") || !strings.Contains(r.Stdout, "1 failed") ||
		!strings.Contains(r.Stdout, "failed s3://"+b.bucket+"/two/outside.txt: ") || !strings.Contains(r.Stdout, "allowed directories") {
		t.Errorf("summary of a failed file: %s", r)
	}
	if got := b.getObject(t, "two/f001.txt"); string(got) != string(want["up/f001.txt"]) {
		t.Errorf("two/f001.txt: %q", got)
	}

	for _, tc := range []struct {
		desc string
		argv []string
		want string
		code int
	}{
		{desc: "dest not a directory", argv: []string{"put", argv[0], argv[1], b.url("x")}, want: "end it with '/'", code: exitUsage},
		{desc: "task id", argv: []string{"put", argv[0], argv[1], b.url("x/"), "--task-id", "t1"}, want: "--task-id and --idempotent name one task", code: exitUsage},
		{desc: "same base name", argv: []string{"put", argv[0], filepath.Join(b.dir, argv[0]), b.url("x/")}, want: "would both be", code: exitUsage},
		{desc: "notify", argv: []string{"put", argv[0], argv[1], b.url("x/"), "--notify", "https://hooks.example.com/x"}, want: "--notify applies to one transfer", code: exitUsage},
		{desc: "missing file", argv: []string{"put", argv[0], "nope.txt", b.url("x/")}, want: "does not exist", code: 1},
	} {
		if r := b.ferry(t, append(tc.argv, "--queue", b.queue)...); r.Code != tc.code || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%s: want exit %d and %q: %s", tc.desc, tc.code, tc.want, r)
		}
	}
}

func strPtr(s string) *string { return &s }
