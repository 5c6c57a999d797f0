package s3key

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc, key string
		ok        bool
	}{
		{"plain", "a/b/c.txt", true},
		{"unicode", "données/été.txt", true},
		{"max length", strings.Repeat("a", MaxLen), true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", MaxLen+1), false},
		{"invalid utf8", "a/\xff", false},
		{"leading slash", "/a", false},
		{"trailing slash", "a/", false},
		{"double slash", "a//b", false},
		{"dot", "a/./b", false},
		{"dotdot", "../etc/passwd", false},
		{"control", "a\nb", false},
	} {
		err := Validate(tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate(%q) = %v, want ok=%v", tc.desc, tc.key, err, tc.ok)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", "a/", "a/b"} {
		if err := ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"../", "a//", "/"} {
		if err := ValidatePrefix(p); err == nil {
			t.Errorf("ValidatePrefix(%q) = nil, want an error", p)
		}
	}
}

func TestValidateStored(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc, key string
		ok        bool
	}{
		{"plain key", "a/b.txt", true},
		{"folder marker", "fm/sub/", true},
		{"top-level marker", "fm/", true},
		{"marker at the length limit", strings.Repeat("a", MaxLen-1) + "/", true},
		{"marker over the length limit", strings.Repeat("a", MaxLen) + "/", false},
		{"root", "/", false},
		{"double trailing slash", "a//", false},
		{"dot-dot marker", "a/../", false},
		{"bad plain key", "a//b", false},
	} {
		if err := ValidateStored(tc.key); (err == nil) != tc.ok {
			t.Errorf("%s: ValidateStored(%q) = %v, want ok %v", tc.desc, tc.key, err, tc.ok)
		}
		if IsMarker(tc.key) != strings.HasSuffix(tc.key, "/") {
			t.Errorf("%s: IsMarker(%q) = %v", tc.desc, tc.key, IsMarker(tc.key))
		}
	}
	if err := Validate("fm/sub/"); err == nil {
		t.Error(`Validate("fm/sub/") = nil: a producer's object key must not end in "/"`)
	}
}

// FuzzValidate checks that every accepted key keeps the properties S3 and
// ferry rely on.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a", "a/b", "../x", "a//b", "\xff", "é/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if Validate(key) != nil {
			return
		}
		if !utf8.ValidString(key) || len(key) > MaxLen || key == "" {
			t.Fatalf("accepted bad key %q", key)
		}
		for _, seg := range strings.Split(key, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("accepted key %q with segment %q", key, seg)
			}
		}
	})
}
