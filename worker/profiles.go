package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/ferryhq/ferry/internal/objectid"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

var errUnknownProfile = errors.New("unknown profile")

// profiles keeps one SDK client per profile, built on first use, and opens
// a storage per (profile, bucket) on it.
type profiles struct {
	cfgs    map[string]storage.Config
	mu      sync.Mutex
	clients map[string]*storage.Client
}

// newProfiles keeps cfgs; a profile that sets no max_pool_connections
// gets pool requests in flight (the worker's requests in flight, at
// least storage.DefaultMaxPoolConnections): the storage default, 10, would
// queue the default worker's 64 batch items for a connection.
func newProfiles(cfgs map[string]storage.Config, pool int) *profiles {
	own := make(map[string]storage.Config, len(cfgs))
	for name, c := range cfgs {
		if c.MaxPoolConnections == 0 {
			c.MaxPoolConnections = max(pool, storage.DefaultMaxPoolConnections)
		}
		own[name] = c
	}
	return &profiles{cfgs: own, clients: map[string]*storage.Client{}}
}

func (p *profiles) names() string {
	return strings.Join(slices.Sorted(maps.Keys(p.cfgs)), ", ")
}

// open returns a storage on bucket through the named profile.
func (p *profiles) open(ctx context.Context, profile, bucket string) (*storage.S3, error) {
	c, err := p.client(ctx, tasks.ProfileName(profile))
	if err != nil {
		return nil, err
	}
	return c.Bucket(bucket)
}

func (p *profiles) client(ctx context.Context, profile string) (*storage.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[profile]; ok {
		return c, nil
	}
	cfg, ok := p.cfgs[profile]
	if !ok {
		return nil, fmt.Errorf("%w %q: this worker knows %s; add it under profiles: in the worker's config", errUnknownProfile, profile, p.names())
	}
	c, err := storage.NewClient(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("profile %q: %w", profile, err)
	}
	p.clients[profile] = c
	return c, nil
}

// sameEndpoint reports whether two profiles reach the same server (one
// normalised endpoint, see objectid) with the same region, credentials and
// prefix, so that a copy between them can be server-side on one client.
func (p *profiles) sameEndpoint(a, b string) bool {
	a, b = tasks.ProfileName(a), tasks.ProfileName(b)
	if a == b {
		return true
	}
	ca, cb := p.cfgs[a], p.cfgs[b]
	return objectid.Endpoint(ca.EndpointURL, ca.Region) == objectid.Endpoint(cb.EndpointURL, cb.Region) &&
		ca.Region == cb.Region && ca.AccessKeyID == cb.AccessKeyID && ca.SecretAccessKey == cb.SecretAccessKey &&
		ca.SessionToken == cb.SessionToken && objectid.Prefix(ca.Prefix) == objectid.Prefix(cb.Prefix)
}

// ref is l for object identity: its bucket and key under its profile's
// endpoint, region and prefix. An unknown profile is known by name only
// (opening it fails later with the list of known ones).
func (p *profiles) ref(l tasks.Location) objectid.Ref {
	name := tasks.ProfileName(l.Profile)
	c, ok := p.cfgs[name]
	if !ok {
		return objectid.Ref{Profile: objectid.Profile{Name: name, NameOnly: true}, Bucket: l.Bucket, Key: l.Key}
	}
	return objectid.Ref{Profile: objectid.Profile{Name: name, EndpointURL: c.EndpointURL, Region: c.Region, Prefix: c.Prefix},
		Bucket: l.Bucket, Key: l.Key}
}

// checkDistinct refuses, permanently, a transfer whose source and
// destination are one stored object, however the profiles spell it.
func (p *profiles) checkDistinct(src, dst tasks.Location) error {
	if err := objectid.CheckDistinct(p.ref(src), p.ref(dst)); err != nil {
		return permanent(err)
	}
	return nil
}

// checkNoOverlap refuses, permanently, a migration between overlapping
// prefixes of one bucket, however the profiles spell it.
func (p *profiles) checkNoOverlap(src, dst tasks.Location) error {
	if err := objectid.CheckNoOverlap(p.ref(src), p.ref(dst)); err != nil {
		return permanent(err)
	}
	return nil
}

// Close closes every client.
func (p *profiles) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.clients {
		_ = c.Close()
	}
	p.clients = map[string]*storage.Client{}
	return nil
}
