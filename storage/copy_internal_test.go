package storage

import (
	"net/url"
	"strings"
	"testing"
)

// TestCopySourceEncoding: x-amz-copy-source is "bucket/key" URL-encoded as
// S3 specifies: every byte but the unreserved characters (A-Z a-z 0-9 - _ .
// ~) and "/" percent-encoded, as upper-case hex of the UTF-8 bytes. The
// expected values are written out by hand from that rule; a server decodes
// each back to exactly the key, so "x+y" is never "x y" and "%2F" is never
// "/".
func TestCopySourceEncoding(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc, key, want string
	}{
		{"plain", "dir/file.txt", "b/dir/file.txt"},
		{"unreserved kept", "A-Z_a.z~0-9", "b/A-Z_a.z~0-9"},
		{"plus", "x+y.txt", "b/x%2By.txt"},
		{"space", "x y.txt", "b/x%20y.txt"},
		{"encoded slash stays literal", "a%2Fb", "b/a%252Fb"},
		{"encoded space stays literal", "a%20b", "b/a%2520b"},
		{"percent", "100%", "b/100%25"},
		{"question mark", "what?.txt", "b/what%3F.txt"},
		{"hash", "#1", "b/%231"},
		{"ampersand and equals", "a&b=c", "b/a%26b%3Dc"},
		{"semicolon and colon", "a;b:c", "b/a%3Bb%3Ac"},
		{"at, comma, dollar", "u@h,$", "b/u%40h%2C%24"},
		{"sub-delims", "!'()*", "b/%21%27%28%29%2A"},
		{"brackets and braces", "[a]{b}", "b/%5Ba%5D%7Bb%7D"},
		{"quote, angle, pipe, caret, backtick, backslash", "\"<|^`\\>", "b/%22%3C%7C%5E%60%5C%3E"},
		{"leading and trailing space", " k ", "b/%20k%20"},
		{"NFC é", "caf\u00e9", "b/caf%C3%A9"},
		{"NFD é", "cafe\u0301", "b/cafe%CC%81"},
		{"emoji", "\U0001F600.png", "b/%F0%9F%98%80.png"},
		{"slashes kept", "a/b/c/", "b/a/b/c/"},
	} {
		got := copySource("b", tc.key)
		if got != tc.want {
			t.Errorf("%s: copySource(b, %q) = %q, want %q", tc.desc, tc.key, got, tc.want)
		}
		// What the server does with it: percent-decoding gives the key back.
		if dec, err := url.PathUnescape(got); err != nil || dec != "b/"+tc.key {
			t.Errorf("%s: %q decodes to %q (%v), want %q", tc.desc, got, dec, err, "b/"+tc.key)
		}
		if strings.ContainsAny(strings.TrimPrefix(got, "b/"), "+ ?#&=;") {
			t.Errorf("%s: %q keeps a character S3 would read differently", tc.desc, got)
		}
	}
}
