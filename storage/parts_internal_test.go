package storage

import "testing"

const mib = 1 << 20

func TestStreamPartLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc                string
		base, budget, limit int64
	}{
		{"worker defaults: 8 × 16 MiB", 16 * mib, 4 * 4 * 16 * mib, 128 * mib},
		{"half a small budget", 16 * mib, 64 * mib, 32 * mib},
		{"never below the part size", 16 * mib, 16 * mib, 16 * mib},
		{"at most 5 GiB", 1 << 30, 100 << 30, MaxPartSize},
		{"rounded down to a MiB", 5*mib + 1, 1 << 40, 40 * mib},
	} {
		if got := streamPartLimit(tc.base, tc.budget); got != tc.limit {
			t.Errorf("%s: streamPartLimit(%d, %d) = %d, want %d", tc.desc, tc.base, tc.budget, got, tc.limit)
		}
	}
}

func TestStreamPartSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		base, limit int64
		n           int
		want        int64
	}{
		{16 * mib, 128 * mib, 1, 16 * mib},
		{16 * mib, 128 * mib, 500, 16 * mib},
		{16 * mib, 128 * mib, 501, 32 * mib},
		{16 * mib, 128 * mib, 1000, 32 * mib},
		{16 * mib, 128 * mib, 1001, 64 * mib},
		{16 * mib, 128 * mib, 1501, 128 * mib},
		{16 * mib, 128 * mib, 10000, 128 * mib},
		{16 * mib, 16 * mib, 10000, 16 * mib}, // a budget of one part: no growth
		{16 * mib, 40 * mib, 1001, 40 * mib},  // capped, not doubled past the limit
		{MaxPartSize, MaxPartSize, 9999, MaxPartSize},
	} {
		if got := streamPartSize(tc.base, tc.limit, tc.n); got != tc.want {
			t.Errorf("streamPartSize(%d, %d, %d) = %d, want %d", tc.base, tc.limit, tc.n, got, tc.want)
		}
	}
}

// TestStreamScheduleCapacity: with the worker's default settings a stream
// of unknown length reaches 1 TiB within 10,000 parts, and part sizes never
// shrink (S3 needs only that parts but the last are ≥ 5 MiB; ferry keeps
// them monotone so a stream's memory only grows with its length).
func TestStreamScheduleCapacity(t *testing.T) {
	t.Parallel()
	base := int64(DefaultPartSize)
	limit := streamPartLimit(base, 4*DefaultPartConcurrency*base)
	var total, prev int64
	for n := 1; n <= MaxParts; n++ {
		sz := streamPartSize(base, limit, n)
		if sz < prev || sz < MinPartSize || sz > limit {
			t.Fatalf("part %d: %d bytes after %d (limit %d)", n, sz, prev, limit)
		}
		prev = sz
		total += sz
	}
	if total < 1<<40 {
		t.Errorf("10,000 parts carry %d bytes, want at least 1 TiB", total)
	}
	t.Logf("capacity with defaults: %.2f TiB, largest part %d MiB", float64(total)/(1<<40), limit/mib)
}
