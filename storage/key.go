package storage

import (
	"fmt"
	"strings"

	"github.com/ferryhq/ferry/internal/objectid"
	"github.com/ferryhq/ferry/internal/s3key"
)

func normPrefix(p string) string { return objectid.Prefix(p) }

// ref is key in this bucket for object identity (objectid.Same).
func (s *S3) ref(key string) objectid.Ref {
	return objectid.Ref{Profile: objectid.Profile{EndpointURL: s.c.cfg.EndpointURL, Region: s.c.cfg.Region, Prefix: s.prefix},
		Bucket: s.bucket, Key: key}
}

func validatePrefix(p string) error { return s3key.ValidatePrefix(p) }

// fullKey applies the prefix and validates the result. A folder marker
// ("dir/", a key ending in "/") is an object like any other: a listing
// returns it, and reading, writing and deleting it must work.
func (s *S3) fullKey(key string) (string, error) {
	full := s.prefix + key
	if err := s3key.ValidateStored(full); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	return full, nil
}

// fullPrefix applies the prefix to a listing prefix.
func (s *S3) fullPrefix(prefix string) (string, error) {
	full := s.prefix + prefix
	if err := s3key.ValidatePrefix(full); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	return full, nil
}

// relKey strips the prefix from a key the server returned.
func (s *S3) relKey(full string) string { return strings.TrimPrefix(full, s.prefix) }

// prepare returns the SDK client and the full key for a call on key: the
// preamble of every single-object method.
func (s *S3) prepare(key string) (S3API, string, error) {
	api, err := s.api()
	if err != nil {
		return nil, "", err
	}
	full, err := s.fullKey(key)
	if err != nil {
		return nil, "", err
	}
	return api, full, nil
}
