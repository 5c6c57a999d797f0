package storage_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
)

// etagDeleteS3 is a fake DeleteObjects that honours per-object ETags like
// AWS: objects maps a full key to its current ETag (quoted).
type etagDeleteS3 struct {
	storage.S3API
	objects map[string]string
}

func (f *etagDeleteS3) DeleteObjects(_ context.Context, in *s3.DeleteObjectsInput, _ ...func(*s3.Options)) (*s3.DeleteObjectsOutput, error) {
	out := &s3.DeleteObjectsOutput{}
	for _, o := range in.Delete.Objects {
		k := aws.ToString(o.Key)
		cur, ok := f.objects[k]
		switch {
		case o.ETag == nil:
			panic("DeleteObjects without an ETag: unconditional")
		case !ok:
			out.Errors = append(out.Errors, types.Error{Key: o.Key, Code: aws.String("NoSuchKey")})
		case cur != aws.ToString(o.ETag):
			out.Errors = append(out.Errors, types.Error{Key: o.Key, Code: aws.String("PreconditionFailed")})
		default:
			delete(f.objects, k)
		}
	}
	return out, nil
}

// TestDeleteIfUnchangedAWS: on AWS the listed ETags travel in DeleteObjects,
// and an object AWS refuses (changed, or gone) is reported kept.
func TestDeleteIfUnchangedAWS(t *testing.T) {
	t.Parallel()
	api := &etagDeleteS3{objects: map[string]string{"p/a": `"1"`, "p/b": `"new"`}}
	c, err := storage.NewClientWithAPI(storage.Config{Provider: storage.ProviderAWS, Region: "us-east-1", Prefix: "p/"}, api)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Bucket("bucket")
	if err != nil {
		t.Fatal(err)
	}
	n, changed, err := s.DeleteIfUnchanged(t.Context(), []storage.StoredFile{{Key: "a", ETag: "1"}, {Key: "b", ETag: "old"}, {Key: "gone", ETag: "2"}})
	if err != nil || n != 1 || !slices.Equal(changed, []string{"b", "gone"}) {
		t.Errorf("DeleteIfUnchanged = %d, %v, %v; want 1 deleted, [b gone] kept", n, changed, err)
	}
	if _, ok := api.objects["p/b"]; !ok || len(api.objects) != 1 {
		t.Errorf("left %v; want only p/b", api.objects)
	}
}

// TestDeleteIfUnchanged on the real server: an object rewritten since it
// was listed, or deleted since, is kept and reported; an unchanged one is
// deleted.
func TestDeleteIfUnchanged(t *testing.T) {
	t.Parallel()
	s := open(t, testenv.S3(t), nil)
	ctx := t.Context()
	var listed []storage.StoredFile
	for _, k := range []string{"a", "b", "c"} {
		f, err := s.PutBytes(ctx, k, []byte("listed "+k), nil)
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, f)
	}
	if _, err := s.PutBytes(ctx, "b", []byte("rewritten"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	n, changed, err := s.DeleteIfUnchanged(ctx, listed)
	if err != nil || n != 1 || !slices.Equal(changed, []string{"b", "c"}) {
		t.Errorf("DeleteIfUnchanged = %d, %v, %v; want 1 deleted, [b c] kept", n, changed, err)
	}
	if ok, _ := s.Exists(ctx, "a"); ok {
		t.Error("the unchanged object is still there")
	}
	if got, err := s.GetBytes(ctx, "b"); err != nil || string(got) != "rewritten" {
		t.Errorf("the rewritten object: %q, %v", got, err)
	}
}

// TestDeleteIfUnchangedKeepsSameBytesRewritten: an object written again
// after the listing with the same bytes (a re-upload, a restore: same ETag,
// a later LastModified) is someone's live object, kept like any other
// rewrite — its ETag alone cannot tell.
func TestDeleteIfUnchangedKeepsSameBytesRewritten(t *testing.T) {
	t.Parallel()
	s := open(t, testenv.S3(t), nil)
	ctx := t.Context()
	for _, k := range []string{"same", "untouched"} {
		if _, err := s.PutBytes(ctx, k, []byte("bytes of "+k), nil); err != nil {
			t.Fatal(err)
		}
	}
	var listed []storage.StoredFile
	for f, err := range s.List(ctx, "", 0) {
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, f)
	}
	if len(listed) != 2 || listed[0].LastModified.IsZero() {
		t.Fatalf("listing: %+v", listed)
	}
	// LastModified is compared to the second with a second of slack
	// (rewrittenSince): wait until a rewrite is visibly later.
	time.Sleep(3100 * time.Millisecond)
	re, err := s.PutBytes(ctx, "same", []byte("bytes of same"), nil)
	if err != nil || re.ETag != listed[0].ETag {
		t.Fatalf("rewrite: %+v, %v; want the listed ETag %s", re, err, listed[0].ETag)
	}
	n, changed, err := s.DeleteIfUnchanged(ctx, listed)
	if err != nil || n != 1 || !slices.Equal(changed, []string{"same"}) {
		t.Errorf("DeleteIfUnchanged = %d, %v, %v; want 1 deleted, [same] kept", n, changed, err)
	}
	if ok, _ := s.Exists(ctx, "same"); !ok {
		t.Error("the object rewritten with the same bytes after the listing was deleted")
	}
	if ok, _ := s.Exists(ctx, "untouched"); ok {
		t.Error("the untouched object is still there")
	}
}
