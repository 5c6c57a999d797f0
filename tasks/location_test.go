package tasks_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ferryhq/ferry/tasks"
)

func TestLocationKindAndString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc     string
		loc      tasks.Location
		wantKind tasks.Kind
		wantStr  string
	}{
		{desc: "s3", loc: tasks.Location{Profile: "r2", Bucket: "b-1", Key: "a/b.txt"}, wantKind: tasks.KindS3, wantStr: "s3://b-1/a/b.txt"},
		{desc: "file", loc: tasks.Location{Path: "/data/x"}, wantKind: tasks.KindFile, wantStr: "/data/x"},
		{desc: "https", loc: tasks.Location{URL: "https://example.com/x"}, wantKind: tasks.KindHTTP, wantStr: "https://example.com/x"},
		{desc: "inline", loc: tasks.Location{Data: []byte("hello")}, wantKind: tasks.KindInline, wantStr: "inline (5 bytes)"},
		{desc: "empty inline is still inline", loc: tasks.Location{Data: []byte{}}, wantKind: tasks.KindInline, wantStr: "inline (0 bytes)"},
		{desc: "nothing set", loc: tasks.Location{}, wantKind: tasks.KindInvalid, wantStr: "(invalid location)"},
		{desc: "two set", loc: tasks.Location{Bucket: "bbb", Path: "/x"}, wantKind: tasks.KindInvalid, wantStr: "(invalid location)"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got := []string{tc.loc.Kind().String(), tc.loc.String()}
			want := []string{tc.wantKind.String(), tc.wantStr}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("kind, string mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseLocation(t *testing.T) {
	t.Parallel()
	abs, err := filepath.Abs("rel/file.bin")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc    string
		in      string
		profile string
		want    tasks.Location
		wantErr string
	}{
		{desc: "s3 default profile", in: "s3://bucket/dir/key", want: tasks.Location{Profile: "default", Bucket: "bucket", Key: "dir/key"}},
		{desc: "s3 named profile", in: "s3://bucket/key", profile: "r2", want: tasks.Location{Profile: "r2", Bucket: "bucket", Key: "key"}},
		{desc: "s3 bucket only", in: "s3://bucket", want: tasks.Location{Profile: "default", Bucket: "bucket"}},
		{desc: "s3 prefix", in: "s3://bucket/dir/", want: tasks.Location{Profile: "default", Bucket: "bucket", Key: "dir/"}},
		{desc: "https", in: "https://example.com/a?b=c", want: tasks.Location{URL: "https://example.com/a?b=c"}},
		{desc: "absolute path", in: "/var/data/f", want: tasks.Location{Path: "/var/data/f"}},
		{desc: "absolute path is cleaned", in: "/var/data/../f", want: tasks.Location{Path: "/var/f"}},
		{desc: "relative path made absolute", in: "rel/file.bin", want: tasks.Location{Path: abs}},
		{desc: "empty", in: "", wantErr: "empty location"},
		{desc: "s3 without bucket", in: "s3:///key", wantErr: "has no bucket"},
		{desc: "plain http refused", in: "http://example.com/x", wantErr: "plain http"},
		{desc: "other scheme refused", in: "gs://bucket/key", wantErr: "unsupported scheme"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got, err := tasks.ParseLocation(tc.in, tc.profile)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseLocation(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLocation(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseLocation(%q) mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestLocationValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		loc     tasks.Location
		wantErr string // "" means valid
	}{
		{desc: "s3 ok", loc: tasks.Location{Profile: "prod_1.eu-west", Bucket: "my.bucket-1", Key: "a/b c/ü.txt"}},
		{desc: "s3 empty profile is default", loc: tasks.Location{Bucket: "bkt", Key: "k"}},
		{desc: "file ok", loc: tasks.Location{Path: "/srv/data/file.bin"}},
		{desc: "https ok", loc: tasks.Location{URL: "https://cdn.example.com/a.iso?x=1"}},
		{desc: "inline ok", loc: tasks.Location{Data: []byte("x")}},
		{desc: "inline at limit", loc: tasks.Location{Data: make([]byte, tasks.MaxInlineSize)}},
		{desc: "empty", loc: tasks.Location{}, wantErr: "location is empty"},
		{desc: "two kinds", loc: tasks.Location{Bucket: "bkt", Key: "k", URL: "https://x.y/"}, wantErr: "more than one"},
		{desc: "bucket too short", loc: tasks.Location{Bucket: "ab", Key: "k"}, wantErr: "not a valid S3 bucket name"},
		{desc: "bucket uppercase", loc: tasks.Location{Bucket: "MyBucket", Key: "k"}, wantErr: "not a valid S3 bucket name"},
		{desc: "bucket too long", loc: tasks.Location{Bucket: strings.Repeat("b", 64), Key: "k"}, wantErr: "not a valid S3 bucket name"},
		{desc: "bucket underscore", loc: tasks.Location{Bucket: "my_bucket", Key: "k"}, wantErr: "not a valid S3 bucket name"},
		{desc: "bad profile", loc: tasks.Location{Profile: "a b", Bucket: "bkt", Key: "k"}, wantErr: "not a profile name"},
		{desc: "credentials as a profile", loc: tasks.Location{Profile: "AKIA:s3cret", Bucket: "bkt", Key: "k"}, wantErr: `not a profile name: it contains ':'`},
		{desc: "profile on a file", loc: tasks.Location{Profile: "p", Path: "/x"}, wantErr: "s3 locations only"},
		{desc: "credentials as a profile on a file", loc: tasks.Location{Profile: "AKIA:s3cret", Path: "/x"}, wantErr: "s3 locations only"},
		{desc: "file no_follow ok", loc: tasks.Location{Path: "/srv/data/file.bin", NoFollow: true}},
		{desc: "no_follow on s3", loc: tasks.Location{Bucket: "bkt", Key: "k", NoFollow: true}, wantErr: "local paths only"},
		{desc: "key on a URL", loc: tasks.Location{Key: "k", URL: "https://x.y/"}, wantErr: "s3 locations only"},
		{desc: "empty key", loc: tasks.Location{Bucket: "bkt"}, wantErr: "key is empty"},
		{desc: "dotdot key", loc: tasks.Location{Bucket: "bkt", Key: "a/../b"}, wantErr: `".." segment`},
		{desc: "double slash key", loc: tasks.Location{Bucket: "bkt", Key: "a//b"}, wantErr: "empty path segment"},
		{desc: "control char key", loc: tasks.Location{Bucket: "bkt", Key: "a\nb"}, wantErr: "control character"},
		{desc: "relative path", loc: tasks.Location{Path: "data/file"}, wantErr: "is relative"},
		{desc: "dotdot path", loc: tasks.Location{Path: "/srv/../etc/passwd"}, wantErr: "not clean"},
		{desc: "trailing slash path", loc: tasks.Location{Path: "/srv/data/"}, wantErr: "not clean"},
		{desc: "http URL", loc: tasks.Location{URL: "http://example.com/x"}, wantErr: "only https"},
		{desc: "ftp URL", loc: tasks.Location{URL: "ftp://example.com/x"}, wantErr: "only https"},
		{desc: "URL without host", loc: tasks.Location{URL: "https:///x"}, wantErr: "no host"},
		{desc: "URL with userinfo", loc: tasks.Location{URL: "https://user:s3cret@example.com/x"}, wantErr: "secrets never travel"},
		{desc: "URL that does not parse", loc: tasks.Location{URL: "https://exa mple.com/%zz"}, wantErr: "does not parse"},
		{desc: "oversized inline", loc: tasks.Location{Data: make([]byte, tasks.MaxInlineSize+1)}, wantErr: "inline data is 262145 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			err := tc.loc.Validate("source")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate error = %v, want one containing %q", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "source: ") {
				t.Errorf("Validate error %q does not start with the role", err)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("Validate error %q leaks a secret (a URL's password, a profile that is a credential)", err)
			}
		})
	}
}

// TestLocationStringHidesURLSecrets: String goes to logs, progress and the
// dashboard, so a presigned URL's signature must not appear in it.
func TestLocationStringHidesURLSecrets(t *testing.T) {
	t.Parallel()
	l := tasks.Location{URL: "https://files.example.com/a/b.bin?X-Amz-Signature=s3cr3t&X-Amz-Credential=AKIA"}
	if got := l.String(); got != "https://files.example.com/a/b.bin" {
		t.Errorf("String() = %q; want the URL without its query", got)
	}
}
