package worker

import (
	"testing"

	"github.com/ferryhq/ferry/storage"
)

// TestProfilesPoolFollowsConcurrency: a profile that sets no
// max_pool_connections gets a connection per request the worker may have
// in flight (else the default worker's 64 batch items would queue for 10
// connections); one that sets it keeps its own.
func TestProfilesPoolFollowsConcurrency(t *testing.T) {
	cfg := Config{Profiles: map[string]storage.Config{"default": {}, "capped": {MaxPoolConnections: 3}}}
	cfg.setDefaults()
	p := newProfiles(cfg.Profiles, cfg.requestsInFlight())
	if got, want := p.cfgs["default"].MaxPoolConnections, 4*16; got != want {
		t.Errorf("default worker: pool %d; want %d (4 slots × 16 batch items)", got, want)
	}
	if got := p.cfgs["capped"].MaxPoolConnections; got != 3 {
		t.Errorf("a profile's own max_pool_connections: %d; want 3 kept", got)
	}
	if cfg.Profiles["default"].MaxPoolConnections != 0 {
		t.Error("newProfiles changed the caller's config")
	}
	small := Config{Concurrency: 1, PartConcurrency: 2, BatchConcurrency: 2}
	if got := newProfiles(map[string]storage.Config{"d": {}}, small.requestsInFlight()).cfgs["d"].MaxPoolConnections; got != storage.DefaultMaxPoolConnections {
		t.Errorf("a small worker: pool %d; want at least the storage default %d", got, storage.DefaultMaxPoolConnections)
	}
}
