package s3key

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen is S3's limit on a key's length in bytes, prefix included.
const MaxLen = 1024

// Validate reports why key is not a usable object key, or nil. A key must be
// valid UTF-8, at most MaxLen bytes, free of control characters, and have no
// empty, "." or ".." segments: such keys map to different objects on
// different providers (and to path escapes on file-backed servers).
func Validate(key string) error {
	if key == "" {
		return fmt.Errorf("key is empty: give an object key such as \"dir/file.txt\"")
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("key %q is not valid UTF-8", key)
	}
	if len(key) > MaxLen {
		return fmt.Errorf("key is %d bytes long; S3 allows at most %d (prefix included)", len(key), MaxLen)
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("key %q contains a control character (%U)", key, r)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("key %q has an empty path segment (a leading, trailing or double \"/\")", key)
		case ".", "..":
			return fmt.Errorf("key %q has a %q segment; use a plain key without relative path parts", key, seg)
		}
	}
	return nil
}

// ValidatePrefix is Validate for listing prefixes: empty is allowed (the
// whole bucket), and a trailing "/" is allowed.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if err := Validate(strings.TrimSuffix(prefix, "/")); err != nil {
		return fmt.Errorf("prefix: %w", err)
	}
	return nil
}

// IsMarker reports whether key names a folder marker: a key ending in "/",
// as the AWS console and directory-marker tools create them (zero bytes,
// often Content-Type application/x-directory) to show an empty directory.
func IsMarker(key string) bool { return strings.HasSuffix(key, "/") }

// ValidateStored is Validate for a key found in a bucket, which may also be
// a folder marker: "photos/2024/" (one trailing "/" after a valid key).
// Markers are objects: listing, copying and deleting them must work, while
// a producer naming an object "dir/" by mistake is still refused by
// Validate.
func ValidateStored(key string) error {
	rest, ok := strings.CutSuffix(key, "/")
	if !ok {
		return Validate(key)
	}
	if len(key) > MaxLen {
		return fmt.Errorf("folder marker key is %d bytes long; S3 allows at most %d (prefix included)", len(key), MaxLen)
	}
	if err := Validate(rest); err != nil {
		return fmt.Errorf("folder marker %q: %w", key, err)
	}
	return nil
}
