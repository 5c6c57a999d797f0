package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/google/go-cmp/cmp"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// pagedAPI is a fake S3 API: ListObjectsV2 answers scripted pages per
// bucket (the continuation token is the next page's index), DeleteObjects
// records its keys. Any other call panics on the nil embedded interface.
type pagedAPI struct {
	storage.S3API
	pages map[string][]*s3.ListObjectsV2Output

	mu      sync.Mutex
	deleted []string
}

func (f *pagedAPI) ListObjectsV2(_ context.Context, in *s3.ListObjectsV2Input, _ ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	i, _ := strconv.Atoi(aws.ToString(in.ContinuationToken))
	pages := f.pages[aws.ToString(in.Bucket)]
	if i >= len(pages) {
		return &s3.ListObjectsV2Output{}, nil
	}
	return pages[i], nil
}

func (f *pagedAPI) DeleteObjects(_ context.Context, in *s3.DeleteObjectsInput, _ ...func(*s3.Options)) (*s3.DeleteObjectsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range in.Delete.Objects {
		f.deleted = append(f.deleted, aws.ToString(o.Key))
	}
	return &s3.DeleteObjectsOutput{}, nil
}

var (
	longAgo = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	started = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
)

// page is a listing page of keys (modified longAgo; "key@recent" is
// modified after started). next is the index of the following page, or
// -1 for the last page; truncated without a token is next == -2.
func page(next int, keys ...string) *s3.ListObjectsV2Output {
	out := &s3.ListObjectsV2Output{}
	for _, k := range keys {
		mod := longAgo
		if name, ok := strings.CutSuffix(k, "@recent"); ok {
			k, mod = name, started.Add(time.Second)
		}
		out.Contents = append(out.Contents, types.Object{Key: aws.String(k), Size: aws.Int64(1), ETag: aws.String(`"e"`), LastModified: aws.Time(mod)})
	}
	switch {
	case next >= 0:
		out.IsTruncated, out.NextContinuationToken = aws.Bool(true), aws.String(strconv.Itoa(next))
	case next == -2:
		out.IsTruncated = aws.Bool(true)
	}
	return out
}

// fakeMigration is a migration of src/photos → dst/photos over api, with
// --delete-extra; only what the delete phase uses is set.
func fakeMigration(t *testing.T, api *pagedAPI, p tasks.MigratePayload) *migration {
	t.Helper()
	c, err := storage.NewClientWithAPI(storage.Config{Provider: storage.ProviderGeneric, EndpointURL: "http://fake.invalid", Region: "us-east-1"}, api)
	if err != nil {
		t.Fatal(err)
	}
	src, err := c.Bucket("src")
	if err != nil {
		t.Fatal(err)
	}
	dst, err := c.Bucket("dst")
	if err != nil {
		t.Fatal(err)
	}
	p.Source = tasks.Location{Bucket: "src", Key: "photos/"}
	p.Dest = tasks.Location{Bucket: "dst", Key: "photos/"}
	p.DeleteExtra = true
	return &migration{p: p, src: src, dst: dst}
}

// TestFindExtras: what the merge of two complete listings calls extra.
func TestFindExtras(t *testing.T) {
	t.Parallel()
	api := &pagedAPI{pages: map[string][]*s3.ListObjectsV2Output{
		"src": {page(1, "photos/a", "photos/c"), page(-1, "photos/e", "photos/z")},
		// "photos/" is the destination directory's own marker: never extra.
		"dst": {page(1, "photos/", "photos/a", "photos/b", "photos/c"), page(2, "photos/d@recent", "photos/e"), page(-1, "photos/keep.tmp", "photos/y")},
	}}
	m := fakeMigration(t, api, tasks.MigratePayload{Exclude: []string{"*.tmp"}})
	x, err := findExtras(t.Context(), s3Keys(t.Context(), m.src, "photos/"), m.dst, "photos/", m.p.Selects, started, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(extras{keys: []string{"photos/b", "photos/y"}, etags: []string{"e", "e"}, modified: []time.Time{longAgo, longAgo}, found: 2, recent: 1}, x, cmp.AllowUnexported(extras{})); diff != "" {
		t.Errorf("findExtras (-want +got):\n%s", diff)
	}
	x, err = findExtras(t.Context(), s3Keys(t.Context(), m.src, "photos/"), m.dst, "photos/", m.p.Selects, started, 1)
	if err != nil || len(x.keys) != 1 || x.found != 2 {
		t.Errorf("with keep 1: %+v, %v; want 1 key of 2 found", x, err)
	}
}

// TestDeleteExtraSkipsUntrustedListing: a listing whose keys are not
// strictly increasing, that says "truncated" without a continuation token,
// or that returns a key outside the prefix skips the whole delete phase,
// with the reason in the report, and deletes nothing — also when the fault
// shows only after the destination's listing ended.
func TestDeleteExtraSkipsUntrustedListing(t *testing.T) {
	t.Parallel()
	good := []*s3.ListObjectsV2Output{page(-1, "photos/a", "photos/b")}
	for _, tc := range []struct {
		desc     string
		src, dst []*s3.ListObjectsV2Output
		reason   string
	}{
		{"destination keys out of order", good, []*s3.ListObjectsV2Output{page(-1, "photos/a", "photos/x", "photos/b")}, `not strictly increasing: "photos/b" came after "photos/x"`},
		{"destination key repeated across pages", good, []*s3.ListObjectsV2Output{page(1, "photos/a", "photos/x"), page(-1, "photos/x")}, "not strictly increasing"},
		{"source keys out of order", []*s3.ListObjectsV2Output{page(-1, "photos/a", "photos/c", "photos/b")}, good, "not strictly increasing"},
		{"source out of order after the destination ended", []*s3.ListObjectsV2Output{page(1, "photos/a", "photos/b"), page(-1, "photos/z", "photos/y")}, good, "not strictly increasing"},
		{"destination truncated without a token", good, []*s3.ListObjectsV2Output{page(-2, "photos/a", "photos/b")}, "truncated has no continuation token"},
		{"source truncated without a token", []*s3.ListObjectsV2Output{page(-2, "photos/a")}, good, "truncated has no continuation token"},
		{"destination key outside the prefix", good, []*s3.ListObjectsV2Output{page(-1, "photos/a", "photos-2019/x")}, `outside the prefix "photos/"`},
	} {
		api := &pagedAPI{pages: map[string][]*s3.ListObjectsV2Output{"src": tc.src, "dst": tc.dst}}
		m := fakeMigration(t, api, tasks.MigratePayload{})
		rep := &MigrateReport{}
		st := map[string]string{stateDeleteSince: fmt.Sprint(started.Unix())}
		var err error
		func() {
			// The fake migration has no Worker: going on to delete
			// panics after DeleteObjects, which api.deleted records.
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("went on to delete (%v)", r)
				}
			}()
			err = m.deleteExtras(t.Context(), st, rep)
		}()
		if !errors.Is(err, errDeleteSkipped) {
			t.Errorf("%s: deleteExtras = %v, want errDeleteSkipped", tc.desc, err)
		}
		if !strings.Contains(rep.DeleteSkipped, tc.reason) || !strings.Contains(rep.DeleteSkipped, "nothing deleted") {
			t.Errorf("%s: report says %q, want the reason %q", tc.desc, rep.DeleteSkipped, tc.reason)
		}
		if len(api.deleted) > 0 {
			t.Errorf("%s: deleted %v", tc.desc, api.deleted)
		}
	}

	// An unknown server clock skips the phase too.
	api := &pagedAPI{pages: map[string][]*s3.ListObjectsV2Output{"src": good, "dst": {page(-1, "photos/a", "photos/b", "photos/c")}}}
	rep := &MigrateReport{}
	if err := fakeMigration(t, api, tasks.MigratePayload{}).deleteExtras(t.Context(), map[string]string{stateDeleteSince: deleteSinceUnknown}, rep); !errors.Is(err, errDeleteSkipped) || !strings.Contains(rep.DeleteSkipped, "Date") || len(api.deleted) > 0 {
		t.Errorf("unknown clock: %v, report %q, deleted %v", err, rep.DeleteSkipped, api.deleted)
	}

	// A dry run reports what it would delete, and deletes nothing.
	rep = &MigrateReport{}
	if err := fakeMigration(t, api, tasks.MigratePayload{DryRun: true}).deleteExtras(t.Context(), map[string]string{stateDeleteSince: fmt.Sprint(started.Unix())}, rep); err != nil || rep.WouldDelete != 1 || fmt.Sprint(rep.DeleteSample) != "[photos/c]" || len(api.deleted) > 0 {
		t.Errorf("dry run: %v, would delete %d %v, deleted %v", err, rep.WouldDelete, rep.DeleteSample, api.deleted)
	}
}

// TestFindExtrasCovers: a local tree's entry passed over (a symlink, a
// FIFO) keeps what the destination holds at its key and under it as a
// directory, and nothing else: its siblings "link-2" and "link.txt" are
// extras when the tree lacks them.
func TestFindExtrasCovers(t *testing.T) {
	t.Parallel()
	api := &pagedAPI{pages: map[string][]*s3.ListObjectsV2Output{
		"dst": {page(-1, "photos/a", "photos/link", "photos/link-2", "photos/link.txt", "photos/link/x", "photos/link/y/z", "photos/linkdir/q", "photos/m", "photos/w")},
	}}
	m := fakeMigration(t, api, tasks.MigratePayload{})
	src := func(yield func(listedKey, error) bool) {
		for _, k := range []listedKey{{rel: "a"}, {rel: "link", covers: true}, {rel: "linkdir", covers: true}, {rel: "m"}, {rel: "w", covers: true}} {
			if !yield(k, nil) {
				return
			}
		}
	}
	x, err := findExtras(t.Context(), src, m.dst, "photos/", m.p.Selects, started, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(extras{keys: []string{"photos/link-2", "photos/link.txt"}, etags: []string{"e", "e"}, modified: []time.Time{longAgo, longAgo}, found: 2}, x, cmp.AllowUnexported(extras{})); diff != "" {
		t.Errorf("findExtras (-want +got):\n%s", diff)
	}
}
