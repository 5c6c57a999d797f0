package worker

import (
	"os"
	"testing"
)

// FileFingerprint is the checkpoint fingerprint the worker computes for the
// local file at path, for tests that build a checkpoint by hand.
func FileFingerprint(t testing.TB, path string) string {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return versionOf(st).fingerprint()
}
