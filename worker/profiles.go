package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

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

func newProfiles(cfgs map[string]storage.Config) *profiles {
	return &profiles{cfgs: cfgs, clients: map[string]*storage.Client{}}
}

func (p *profiles) names() string {
	return strings.Join(slices.Sorted(maps.Keys(p.cfgs)), ", ")
}

// open returns a storage on bucket through the named profile.
func (p *profiles) open(ctx context.Context, profile, bucket string) (*storage.S3, error) {
	if profile == "" {
		profile = "default"
	}
	c, err := p.client(ctx, profile)
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

// sameEndpoint reports whether two profiles reach the same server with the
// same credentials, so a copy between them can be server-side.
func (p *profiles) sameEndpoint(a, b string) bool {
	if a == "" {
		a = "default"
	}
	if b == "" {
		b = "default"
	}
	if a == b {
		return true
	}
	ca, cb := p.cfgs[a], p.cfgs[b]
	return ca.EndpointURL == cb.EndpointURL && ca.Region == cb.Region && ca.AccessKeyID == cb.AccessKeyID &&
		ca.SecretAccessKey == cb.SecretAccessKey && ca.Prefix == cb.Prefix
}

// sameObject reports whether two locations name one object: the same
// bucket and key through profiles with the same endpoint and prefix.
func (p *profiles) sameObject(a, b tasks.Location) bool {
	if a.Bucket != b.Bucket || a.Key != b.Key {
		return false
	}
	ca, cb := p.cfgs[profileName(a.Profile)], p.cfgs[profileName(b.Profile)]
	return ca.EndpointURL == cb.EndpointURL && ca.Prefix == cb.Prefix
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
