package tasks_test

import (
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/tasks"
)

func TestDirPrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ desc, in, want string }{
		{"everything", "", ""},
		{"a directory", "photos/", "photos/"},
		{"a bare name is its directory", "photos", "photos/"},
		{"nested", "logs/2024", "logs/2024/"},
		{"a trailing star is the raw prefix", "logs/2024*", "logs/2024"},
		{"a star alone is everything", "*", ""},
		{"a directory ending in a star keeps its slash", "odd*/", "odd*/"},
		{"a star inside is literal", "a*b", "a*b/"},
	} {
		if got := tasks.DirPrefix(tc.in); got != tc.want {
			t.Errorf("%s: DirPrefix(%q) = %q, want %q", tc.desc, tc.in, got, tc.want)
		}
	}
}

// TestMigrateSelects: include and exclude globs match a key or any of its
// leading directories, so a bare name is a directory and 'photos*' is the
// raw prefix.
func TestMigrateSelects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc             string
		include, exclude []string
		rel              string
		want             bool
	}{
		{"no globs take everything", nil, nil, "a/b", true},
		{"** is any key", []string{"**"}, nil, "a/b/c", true},
		{"a name is its directory", []string{"photos"}, nil, "photos/1.jpg", true},
		{"a name never its siblings", []string{"photos"}, nil, "photos-2019/1.jpg", false},
		{"nor a longer file name", []string{"photos"}, nil, "photos.bak", false},
		{"a name is also that object", []string{"photos"}, nil, "photos", true},
		{"a trailing slash is directories only", []string{"photos/"}, nil, "photos", false},
		{"a trailing slash, under it", []string{"photos/"}, nil, "photos/a/b", true},
		{"photos* is the raw prefix: the directory", []string{"photos*"}, nil, "photos/1.jpg", true},
		{"photos* is the raw prefix: a sibling directory", []string{"photos*"}, nil, "photos-2019/x/y.jpg", true},
		{"photos* is the raw prefix: a file", []string{"photos*"}, nil, "photos.bak", true},
		{"photos* not elsewhere", []string{"photos*"}, nil, "old/photos.bak", false},
		{"*/*.gz matches a key", []string{"*/*.gz"}, nil, "a/b.gz", true},
		{"*/*.gz does not match deeper keys' files", []string{"*/*.gz"}, nil, "a/b/c.txt", false},
		{"exclude a directory by name", nil, []string{"tmp"}, "tmp/a/b", false},
		{"exclude tmp/* takes deeper keys too", nil, []string{"tmp/*"}, "tmp/a/b", false},
		{"exclude leaves siblings", nil, []string{"tmp"}, "tmp2/a", true},
		{"exclude beats include", []string{"**"}, []string{"*.log"}, "x.log", false},
	} {
		p := tasks.MigratePayload{Include: tc.include, Exclude: tc.exclude}
		if got := p.Selects(tc.rel); got != tc.want {
			t.Errorf("%s: include %q exclude %q Selects(%q) = %v, want %v", tc.desc, tc.include, tc.exclude, tc.rel, got, tc.want)
		}
	}
}

// TestExcludesDir: a directory is skipped whole only when every key under
// it is excluded, as Selects would decide key by key.
func TestExcludesDir(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		exclude []string
		dir     string
		want    bool
	}{
		{[]string{"tmp"}, "tmp/", true},
		{[]string{"tmp/"}, "tmp/", true},
		{[]string{"tmp"}, "a/tmp/", false},
		{[]string{"*/tmp"}, "a/tmp/", true},
		{[]string{"tmp"}, "tmp/sub/", true},
		{[]string{"tmp*"}, "tmp-2/", true},
		{[]string{"*.log"}, "logs/", false},
		{[]string{"*.log"}, "x.log/", true},
		{[]string{"**"}, "a/", true},
		{nil, "tmp/", false},
	} {
		p := tasks.MigratePayload{Exclude: tc.exclude}
		if got := p.ExcludesDir(tc.dir); got != tc.want {
			t.Errorf("exclude %q: ExcludesDir(%q) = %v, want %v", tc.exclude, tc.dir, got, tc.want)
		}
		if tc.want {
			for _, k := range []string{tc.dir + "f", tc.dir + "a/b.log", tc.dir + "tmp"} {
				if p.Selects(k) {
					t.Errorf("exclude %q: ExcludesDir(%q) but Selects(%q)", tc.exclude, tc.dir, k)
				}
			}
		}
	}
}

func TestPrefixPayloadRules(t *testing.T) {
	t.Parallel()
	a := tasks.Location{Bucket: "bkt-a", Key: "photos"}
	b := tasks.Location{Bucket: "bkt-b", Key: "photos"}
	for _, tc := range []struct {
		desc    string
		p       interface{ Validate() error }
		wantErr string
	}{
		{desc: "migrate bare names", p: tasks.MigratePayload{Source: a, Dest: b}},
		{desc: "migrate dry run with delete_extra previews", p: tasks.MigratePayload{Source: a, Dest: b, DryRun: true, DeleteExtra: true}},
		{desc: "migrate a raw-prefix source", p: tasks.MigratePayload{Source: tasks.Location{Bucket: "bkt-a", Key: "photos*"}, Dest: b}, wantErr: "--include 'photos*'"},
		{desc: "migrate a raw-prefix dest", p: tasks.MigratePayload{Source: a, Dest: tasks.Location{Bucket: "bkt-b", Key: "x/p*"}}, wantErr: "ends in '*'"},
		{desc: "migrate sibling directories in one bucket do not overlap", p: tasks.MigratePayload{Source: tasks.Location{Bucket: "bkt", Key: "photos"}, Dest: tasks.Location{Bucket: "bkt", Key: "photos-2019"}}},
		{desc: "migrate nested directories overlap", p: tasks.MigratePayload{Source: tasks.Location{Bucket: "bkt", Key: "photos"}, Dest: tasks.Location{Bucket: "bkt", Key: "photos/sub"}}, wantErr: "overlap"},
		{desc: "delete dry run", p: tasks.DeletePayload{Dest: b, Recursive: true, DryRun: true}},
		{desc: "delete dry run of one object", p: tasks.DeletePayload{Dest: b, DryRun: true}, wantErr: "recursive deletes only"},
		{desc: "delete raw prefix", p: tasks.DeletePayload{Dest: tasks.Location{Bucket: "bkt", Key: "logs/2024*"}, Recursive: true}},
		{desc: "delete star alone is the whole bucket", p: tasks.DeletePayload{Dest: tasks.Location{Bucket: "bkt", Key: "*"}, Recursive: true}, wantErr: "allow_all"},
	} {
		err := tc.p.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: Validate: %v", tc.desc, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: Validate = %v, want an error containing %q", tc.desc, err, tc.wantErr)
		}
	}
}

// TestDecodeAppliesDirPrefix: the worker gets directory prefixes whoever
// produced the payload, including raw JSON of an older ferry that meant
// "logs/2024" as a raw prefix.
func TestDecodeAppliesDirPrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ payload, want string }{
		{`{"dest":{"bucket":"bkt","key":"logs/2024"},"recursive":true}`, "logs/2024/"},
		{`{"dest":{"bucket":"bkt","key":"logs/2024/"},"recursive":true}`, "logs/2024/"},
		{`{"dest":{"bucket":"bkt","key":"logs/2024*"},"recursive":true}`, "logs/2024"},
		{`{"dest":{"bucket":"bkt","key":"logs/2024"}}`, "logs/2024"}, // one object
	} {
		p, err := tasks.DecodeDelete(asynq.NewTask(tasks.TypeDelete, []byte(tc.payload)))
		if err != nil || p.Dest.Key != tc.want {
			t.Errorf("DecodeDelete(%s): key %q (%v), want %q", tc.payload, p.Dest.Key, err, tc.want)
		}
	}
	p, err := tasks.DecodeMigrate(asynq.NewTask(tasks.TypeMigrate, []byte(`{"source":{"bucket":"bkt-a","key":"photos"},"dest":{"bucket":"bkt-b","key":"photos"},"delete_extra":true}`)))
	if err != nil || p.Source.Key != "photos/" || p.Dest.Key != "photos/" {
		t.Errorf("DecodeMigrate: source %q dest %q (%v), want photos/ and photos/", p.Source.Key, p.Dest.Key, err)
	}
	// A local directory is a directory already: its path is not touched,
	// and a key with it is refused.
	p, err = tasks.DecodeMigrate(asynq.NewTask(tasks.TypeMigrate, []byte(`{"source":{"path":"/data/photos"},"dest":{"bucket":"bkt-b","key":"photos"}}`)))
	if err != nil || p.Source.Path != "/data/photos" || p.Source.Key != "" || p.Dest.Key != "photos/" {
		t.Errorf("DecodeMigrate of a local tree: source %+v dest %q (%v), want /data/photos and photos/", p.Source, p.Dest.Key, err)
	}
	if _, err := tasks.DecodeMigrate(asynq.NewTask(tasks.TypeMigrate, []byte(`{"source":{"path":"/data/photos","key":"x"},"dest":{"bucket":"bkt-b","key":"photos"}}`))); err == nil {
		t.Error("DecodeMigrate took a local source with a key")
	}
}
