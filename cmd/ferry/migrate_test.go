package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestMigrateCLI: ferry migrate --wait --json copies a prefix, a re-run
// skips everything, --dry-run writes nothing, and bad flags are usage errors.
func TestMigrateCLI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t)
	objs := map[string][]byte{}
	for i := range 12 {
		key := fmt.Sprintf("src/d%d/o%02d", i%3, i)
		objs[key] = randomBytes(t, 100+i)
		b.putObject(t, key, objs[key])
	}
	src, dst := "s3://"+b.bucket+"/src/", "s3://"+b.bucket+"/dst/"

	r := b.must(t, "migrate", src, dst, "--queue", b.queue, "--wait", "--json")
	final := checkWaitJSON(t, r, "ferry:migrate", b.queue)
	res, _ := final["result"].(map[string]any)
	if res["copied"] != float64(12) || res["failed"] != float64(0) {
		t.Fatalf("migrate result = %v; want 12 copied", final["result"])
	}
	for key, data := range objs {
		if got := b.getObject(t, "dst/"+key[len("src/"):]); !bytes.Equal(got, data) {
			t.Errorf("dst/%s differs from %s", key[len("src/"):], key)
		}
	}

	r = b.must(t, "migrate", src, dst, "--queue", b.queue, "--wait", "--json")
	res, _ = checkWaitJSON(t, r, "ferry:migrate", b.queue)["result"].(map[string]any)
	if res["skipped"] != float64(12) || res["copied"] != float64(0) {
		t.Errorf("re-run result = %v; want all 12 skipped", res)
	}

	b.putObject(t, "src/d0/new", []byte("new"))
	r = b.must(t, "migrate", src, dst, "--queue", b.queue, "--dry-run", "--wait", "--json")
	res, _ = checkWaitJSON(t, r, "ferry:migrate", b.queue)["result"].(map[string]any)
	if res["would_copy"] != float64(1) || b.getObject(t, "dst/d0/new") != nil {
		t.Errorf("dry run result = %v (or it wrote)", res)
	}

	if r := b.ferry(t, "migrate", "s3://"+b.bucket+"/sr*", dst, "--queue", b.queue); r.code != 2 || !strings.Contains(r.stderr, "--include 'sr*'") {
		t.Errorf("a raw-prefix glob as SRC_PREFIX: exit %d, want 2 (usage) pointing to --include: %s", r.code, r)
	}
	if r := b.ferry(t, "migrate", src, "s3://"+b.bucket+"/src/sub/", "--queue", b.queue); r.code != 2 {
		t.Errorf("overlapping prefixes: exit %d, want 2: %s", r.code, r)
	}
}
