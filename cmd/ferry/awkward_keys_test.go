package main

import (
	"cmp"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	gocmp "github.com/google/go-cmp/cmp"

	"github.com/ferryhq/ferry/internal/testenv"
)

// awkBucket is a bucket of TestAwkwardKeys: on which server, through which
// ferry profile ("" for default).
type awkBucket struct {
	srv     *testenv.S3Server
	name    string
	profile string
}

func (a awkBucket) url(key string) string { return "s3://" + a.name + "/" + key }

// check fails t unless the bucket holds exactly want (testenv.CheckBucket).
func (a awkBucket) check(t *testing.T, step string, want map[string][]byte) {
	t.Helper()
	a.srv.CheckBucket(t, step, a.name, want)
}

// ferryAll runs ferry once per argv, four at a time, and returns the
// results in order.
func (b bundle) ferryAll(t *testing.T, argvs [][]string) []result {
	t.Helper()
	results := make([]result, len(argvs))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, argv := range argvs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = b.ferry(t, argv...)
		})
	}
	wg.Wait()
	return results
}

// runAll enqueues one task per argv and follows them all with one watch:
// every task must complete.
func (b bundle) runAll(t *testing.T, step string, argvs [][]string) {
	t.Helper()
	for i := range argvs {
		argvs[i] = append(argvs[i], "--queue", b.queue, "--json")
	}
	var ids []string
	what := map[string]string{}
	for i, r := range b.ferryAll(t, argvs) {
		if r.Code != 0 {
			t.Fatalf("%s: ferry %q: %s", step, argvs[i], r)
		}
		id := jsonLines(t, r.Stdout)[0]["task_id"].(string)
		ids = append(ids, id)
		what[id] = fmt.Sprintf("%q", argvs[i])
	}
	if w := b.ferry(t, append([]string{"watch"}, ids...)...); w.Code != 0 {
		t.Fatalf("%s: not every task completed: %s\ntasks: %v", step, w, what)
	}
}

// subset is the entries of m whose key is in keys.
func subset(m map[string][]byte, keys []string) map[string][]byte {
	out := map[string][]byte{}
	for _, k := range keys {
		out[k] = m[k]
	}
	return out
}

// TestAwkwardKeys runs issue 17's table of keys S3 allows (testenv.
// AwkwardKeys: "+", space, "%2F", "%20", "?", "#", "&", ";", "~", "%", NFC
// and NFD "é", leading and trailing spaces, 1,024 bytes, emoji, pairs that
// differ only by "+" and space) through every path of the CLI, against
// versitygw (two of them), redis-server and one `ferry worker`: put,
// multipart upload, server-side copy (CopyObject), streamed copy to the
// other server, move (server-side, then streamed), migrate to the other
// server and back (a re-run skips every key; --delete-extra deletes exactly
// the destination keys that spell a source key another way; a directory
// migrates to its "+"/space twin), ls, info, url (GET and PUT), delete and
// delete --recursive. After every step each bucket holds exactly the
// expected keys, each with its own bytes (SHA-256): a key mistaken for its
// twin cannot pass. UploadPartCopy, whose threshold is not a setting, runs
// the same table in storage's TestAwkwardKeys, and `ferry dev`'s S3 server
// in devserver's.
func TestAwkwardKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if !b.s3.Real {
		t.Skip("needs versitygw (make tools): the table tests a real server's key handling")
	}
	far := testenv.OtherS3(t)
	writeFile(t, b.config, configYAML(b.s3, b.redisURL, fmt.Sprintf(`  far:
    provider: generic
    endpoint_url: %s
    region: %s
    access_key_id: %s
    secret_access_key: %s
`, far.Endpoint, far.Region, far.AccessKey, far.SecretKey)))
	b.startWorker(t)

	table := testenv.AwkwardKeys()
	var keys, even, odd []string
	small, big := map[string][]byte{}, map[string][]byte{}
	bulk := randomBytes(t, 5<<20+1024) // two 5 MiB parts
	for i, k := range table {
		keys = append(keys, k.Key)
		if i%2 == 0 {
			even = append(even, k.Key)
		} else {
			odd = append(odd, k.Key)
		}
		small[k.Key] = fmt.Appendf(nil, "small #%d %s %q\n", i, k.Name, k.Key)
		big[k.Key] = append(fmt.Appendf(nil, "big #%d %s %q\n", i, k.Name, k.Key), bulk...)
		writeFile(t, filepath.Join(b.dir, fmt.Sprintf("small-%d", i)), string(small[k.Key]))
		writeFile(t, filepath.Join(b.dir, fmt.Sprintf("big-%d", i)), string(big[k.Key]))
	}
	near := func() awkBucket { return awkBucket{b.s3, b.s3.Bucket(t), ""} }
	puts, uploads, copies, moves, back := near(), near(), near(), near(), near()
	streamed, farMigrated := awkBucket{far, far.Bucket(t), "far"}, awkBucket{far, far.Bucket(t), "far"}
	each := func(argv func(i int, key string) []string) [][]string {
		var out [][]string
		for i, k := range keys {
			out = append(out, argv(i, k))
		}
		return out
	}

	// put (PutObject) and upload (multipart: two 5 MiB parts).
	b.runAll(t, "put and upload", append(
		each(func(i int, k string) []string { return []string{"put", fmt.Sprintf("small-%d", i), puts.url(k)} }),
		each(func(i int, k string) []string {
			return []string{"upload", fmt.Sprintf("big-%d", i), uploads.url(k), "--part-size", "5MiB"}
		})...))
	puts.check(t, "put", small)
	uploads.check(t, "upload", big)
	for _, k := range keys {
		out, err := b.s3.Client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: &uploads.name, Key: &k})
		if err != nil || !strings.HasSuffix(strings.Trim(*out.ETag, `"`), "-2") {
			t.Errorf("upload of %q: want a multipart object of 2 parts (ETag ...-2): %v %v", k, out, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// copy: server-side on one profile, streamed to the other server.
	b.runAll(t, "copy", append(
		each(func(_ int, k string) []string { return []string{"copy", puts.url(k), copies.url(k)} }),
		each(func(_ int, k string) []string {
			return []string{"copy", uploads.url(k), streamed.url(k), "--dst-profile", "far", "--part-size", "5MiB"}
		})...))
	copies.check(t, "server-side copy", small)
	streamed.check(t, "streamed copy", big)
	puts.check(t, "copy sources", small)
	uploads.check(t, "streamed copy sources", big)

	// move, server-side then streamed to the other server: the destination
	// has every key, the source none.
	b.runAll(t, "move", each(func(_ int, k string) []string { return []string{"move", copies.url(k), moves.url(k)} }))
	moves.check(t, "move", small)
	copies.check(t, "move sources", nil)
	farMoves := awkBucket{far, far.Bucket(t), "far"}
	b.runAll(t, "streamed move", each(func(_ int, k string) []string {
		return []string{"move", moves.url(k), farMoves.url(k), "--dst-profile", "far"}
	}))
	farMoves.check(t, "streamed move", small)
	moves.check(t, "streamed move sources", nil)

	// migrate to the other server and back; a re-run finds every key
	// identical (a HEAD of each awkward key at the destination).
	migrate := func(src, dst awkBucket, want map[string]float64, flags ...string) {
		t.Helper()
		r := b.must(t, append([]string{"migrate", src.url(""), dst.url(""), "--src-profile", cmp.Or(src.profile, "default"),
			"--dst-profile", cmp.Or(dst.profile, "default"), "--queue", b.queue, "--wait", "--json"}, flags...)...)
		res, _ := checkWaitJSON(t, r, "ferry:migrate", b.queue)["result"].(map[string]any)
		for k, v := range want {
			if res[k] != v {
				t.Errorf("migrate %s to %s: result %v, want %s %v", src.url(""), dst.url(""), res, k, v)
			}
		}
	}
	n := float64(len(keys))
	migrate(puts, farMigrated, map[string]float64{"copied": n, "failed": 0})
	farMigrated.check(t, "migrate to the other server", small)
	// Extras at the destination that spell a source key another way: a
	// re-run with --delete-extra skips every source key and deletes exactly
	// these. (Objects written less than a second or two before a migration
	// starts count as written during it and are kept: hence the wait.)
	extras := []string{"a%2Bb.txt", "a%2520b.txt", "a%2fb.txt", " a b.txt", "caf\u00c9.txt", "dir+x/f.txt ", "dir%2Bx/f.txt"}
	for _, k := range extras {
		far.PutObject(t, farMigrated.name, k, []byte("extra "+k), nil)
	}
	extrasAt := time.Now()
	migrate(puts, farMigrated, map[string]float64{"copied": 0, "skipped": n, "failed": 0})
	farMigrated.check(t, "migrate re-run without --delete-extra", func() map[string][]byte {
		m := maps.Clone(small)
		for _, k := range extras {
			m[k] = []byte("extra " + k)
		}
		return m
	}())
	time.Sleep(time.Until(extrasAt.Add(testenv.ExtrasSettle)))
	migrate(puts, farMigrated, map[string]float64{"copied": 0, "skipped": n, "failed": 0, "deleted": float64(len(extras))}, "--delete-extra")
	farMigrated.check(t, "migrate --delete-extra", small)
	migrate(farMigrated, back, map[string]float64{"copied": n, "failed": 0})
	back.check(t, "migrate back", small)
	// A directory to its "+"/space twin: they do not overlap, and only the
	// one key moves over.
	dirs := near()
	r := b.must(t, "migrate", puts.url("dir+x"), dirs.url("dir x"), "--queue", b.queue, "--wait", "--json")
	checkWaitJSON(t, r, "ferry:migrate", b.queue)
	dirs.check(t, "migrate dir+x to dir x", map[string][]byte{"dir x/f.txt": small["dir+x/f.txt"]})
	// In one bucket they do not overlap either: the dry run lists the one
	// key of dir+x (its twin holds other bytes), and writes nothing.
	if r := b.ferry(t, "migrate", puts.url("dir+x"), puts.url("dir x"), "--dry-run", "--queue", b.queue, "--wait", "--json"); r.Code != 0 {
		t.Errorf("migrate dir+x to its twin dir x in one bucket: refused as overlapping? %s", r)
	} else {
		res, _ := checkWaitJSON(t, r, "ferry:migrate", b.queue)["result"].(map[string]any)
		if res["would_copy"] != 1.0 || fmt.Sprint(res["sample"]) != "[dir+x/f.txt]" || res["copied"] != 0.0 || res["listed"] != 1.0 {
			t.Errorf("dry run of dir+x to dir x: %v; want 1 listed, would_copy 1 with sample [dir+x/f.txt], nothing copied", res)
		}
	}
	puts.check(t, "after the dry run", small)

	// ls: every key exactly, in text (key from column 34 on, trailing
	// spaces kept) and JSON; a directory whose name differs from another's
	// only by "+" and space lists only itself.
	var lsJSON []string
	for _, l := range jsonLines(t, b.must(t, "ls", puts.url(""), "--json").Stdout) {
		lsJSON = append(lsJSON, l["key"].(string))
	}
	if diff := gocmp.Diff(slices.Sorted(slices.Values(keys)), lsJSON); diff != "" {
		t.Errorf("ls --json (-want +got):\n%s", diff)
	}
	var lsText []string
	for line := range strings.SplitSeq(strings.TrimSuffix(b.must(t, "ls", puts.url("")).Stdout, "\n"), "\n") {
		if len(line) > 33 {
			lsText = append(lsText, line[33:])
		}
	}
	if diff := gocmp.Diff(slices.Sorted(slices.Values(keys)), lsText); diff != "" {
		t.Errorf("ls (-want +got):\n%s", diff)
	}
	for dir, want := range map[string]string{"dir+x": "dir+x/f.txt", "dir x": "dir x/f.txt", "\U0001F600": "\U0001F600/\U0001F680 rocket.txt"} {
		l := jsonLines(t, b.must(t, "ls", puts.url(dir), "--json").Stdout)
		if len(l) != 1 || l[0]["key"] != want {
			t.Errorf("ls %q = %v, want only %q", puts.url(dir), l, want)
		}
	}

	// info: the key, its size and the MD5 of its bytes (a single PUT's ETag).
	infos := b.ferryAll(t, each(func(_ int, k string) []string { return []string{"info", puts.url(k), "--json"} }))
	for i, r := range infos {
		k := keys[i]
		if r.Code != 0 {
			t.Errorf("info %q: %s", k, r)
			continue
		}
		info := jsonLines(t, r.Stdout)[0]
		sum := md5.Sum(small[k])
		if info["key"] != k || info["size"] != float64(len(small[k])) || info["etag"] != hex.EncodeToString(sum[:]) {
			t.Errorf("info %q = %v; want that key, %d bytes, ETag %x", k, info, len(small[k]), sum)
		}
	}

	// url: a presigned GET of each key serves its bytes.
	urls := b.ferryAll(t, each(func(_ int, k string) []string { return []string{"url", puts.url(k)} }))
	for i, r := range urls {
		k := keys[i]
		if r.Code != 0 {
			t.Errorf("url %q: %s", k, r)
			continue
		}
		if got := httpDo(t, http.MethodGet, strings.TrimSpace(r.Stdout), nil); got != string(small[k]) {
			t.Errorf("GET of the presigned URL of %q = %q, want %q", k, got, small[k])
		}
	}

	// url --method PUT: a presigned PUT of each key stores it under that key.
	presigned := near()
	urls = b.ferryAll(t, each(func(_ int, k string) []string { return []string{"url", presigned.url(k), "--method", "PUT"} }))
	for i, r := range urls {
		if r.Code != 0 {
			t.Fatalf("url --method PUT %q: %s", keys[i], r)
		}
		httpDo(t, http.MethodPut, strings.TrimSpace(r.Stdout), small[keys[i]])
	}
	presigned.check(t, "presigned PUT", small)

	// delete one of each pair here, the other there: the twins stay.
	b.runAll(t, "delete", append(deleteArgs(farMoves, even), deleteArgs(back, odd)...))
	farMoves.check(t, "delete of the even keys", subset(small, odd))
	back.check(t, "delete of the odd keys", subset(small, even))

	// delete --recursive: a directory, then its "+"/space twin, then the
	// whole bucket.
	rest := maps.Clone(small)
	for _, dir := range []string{"dir+x", "dir x", "long key+é"} {
		r := b.must(t, "delete", puts.url(dir), "--recursive", "--queue", b.queue, "--wait", "--json")
		checkWaitJSON(t, r, "ferry:delete", b.queue)
		maps.DeleteFunc(rest, func(k string, _ []byte) bool { return strings.HasPrefix(k, dir+"/") })
		puts.check(t, "delete --recursive "+dir, rest)
	}
	if len(rest) != len(keys)-3 {
		t.Errorf("the recursive deletes were to remove 3 keys, the table has %d left of %d", len(rest), len(keys))
	}
	r = b.must(t, "delete", puts.url(""), "--recursive", "--allow-all", "--queue", b.queue, "--wait", "--json")
	checkWaitJSON(t, r, "ferry:delete", b.queue)
	puts.check(t, "delete --recursive --allow-all", nil)
}

// deleteArgs are `ferry delete` argvs for keys of bk.
func deleteArgs(bk awkBucket, keys []string) [][]string {
	var out [][]string
	for _, k := range keys {
		out = append(out, []string{"delete", bk.url(k), "--profile", cmp.Or(bk.profile, "default")})
	}
	return out
}
