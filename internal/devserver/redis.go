package devserver

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// RedisOptions configures StartRedis.
type RedisOptions struct {
	// SnapshotFile, when set, is loaded at start (when it exists) and written
	// at Close and every SnapshotInterval. Empty means state is in memory only.
	SnapshotFile string
	// SnapshotInterval is how often the snapshot is written while running;
	// zero means only at Close.
	SnapshotInterval time.Duration
	// OnSnapshotError receives the errors of periodic snapshots; nil drops
	// them.
	OnSnapshotError func(error)
}

// Redis is a running miniredis.
type Redis struct {
	m    *miniredis.Miniredis
	opts RedisOptions
	stop chan struct{}
	done sync.WaitGroup
	once sync.Once
}

// StartRedis starts miniredis on addr (host:port; port 0 picks a free one).
// A port in use is reported as an error wrapping syscall.EADDRINUSE.
func StartRedis(addr string, opts RedisOptions) (*Redis, error) {
	m := miniredis.NewMiniRedis()
	r := &Redis{m: m, opts: opts, stop: make(chan struct{})}
	if opts.SnapshotFile != "" {
		if err := r.load(opts.SnapshotFile); err != nil {
			return nil, err
		}
	}
	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("embedded Redis: listen on %s: %w", addr, err)
	}
	r.done.Add(1)
	go r.loop()
	return r, nil
}

// Addr is the host:port the server listens on.
func (r *Redis) Addr() string { return r.m.Addr() }

// URL is redis://Addr/0.
func (r *Redis) URL() string { return "redis://" + r.m.Addr() + "/0" }

// Miniredis is the server, for tests.
func (r *Redis) Miniredis() *miniredis.Miniredis { return r.m }

// loop advances miniredis's clock so TTLs expire in real time, and writes
// periodic snapshots.
func (r *Redis) loop() {
	defer r.done.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, lastSnap := time.Now(), time.Now()
	for {
		select {
		case <-r.stop:
			return
		case now := <-tick.C:
			r.m.FastForward(now.Sub(last))
			last = now
			if r.opts.SnapshotFile != "" && r.opts.SnapshotInterval > 0 && now.Sub(lastSnap) >= r.opts.SnapshotInterval {
				lastSnap = now
				if err := r.Snapshot(); err != nil && r.opts.OnSnapshotError != nil {
					r.opts.OnSnapshotError(err)
				}
			}
		}
	}
}

// Close stops the server, writing a final snapshot when configured. Stop
// the clients first (the worker) so the snapshot is consistent.
func (r *Redis) Close() error {
	var err error
	r.once.Do(func() {
		close(r.stop)
		r.done.Wait()
		if r.opts.SnapshotFile != "" {
			err = r.Snapshot()
		}
		r.m.Close()
	})
	return err
}

// snapshot is the file format: db 0's keys, by type.
type snapshot struct {
	Version int            `json:"version"`
	Saved   time.Time      `json:"saved"`
	Keys    []snapshotItem `json:"keys"`
}

type snapshotItem struct {
	Key    string             `json:"key"`
	Type   string             `json:"type"`
	TTLms  int64              `json:"ttl_ms,omitempty"`
	String string             `json:"string,omitempty"`
	Hash   map[string]string  `json:"hash,omitempty"`
	List   []string           `json:"list,omitempty"`
	Set    []string           `json:"set,omitempty"`
	ZSet   map[string]float64 `json:"zset,omitempty"`
}

// Snapshot writes db 0 to the snapshot file (atomically). Keys are read one
// by one, not in one transaction: take it while no client writes for an
// exact copy (Close does).
func (r *Redis) Snapshot() error {
	if r.opts.SnapshotFile == "" {
		return errors.New("embedded Redis: no snapshot file configured")
	}
	s := snapshot{Version: 1, Saved: time.Now().UTC()}
	for _, k := range r.m.Keys() {
		it := snapshotItem{Key: k, Type: r.m.Type(k), TTLms: r.m.TTL(k).Milliseconds()}
		var err error
		switch it.Type {
		case "string":
			it.String, err = r.m.Get(k)
		case "hash":
			var fields []string
			fields, err = r.m.HKeys(k)
			it.Hash = make(map[string]string, len(fields))
			for _, f := range fields {
				it.Hash[f] = r.m.HGet(k, f)
			}
		case "list":
			it.List, err = r.m.List(k)
		case "set":
			it.Set, err = r.m.Members(k)
		case "zset":
			it.ZSet, err = r.m.SortedSet(k)
		case "":
			continue // gone meanwhile
		default:
			continue // streams, HyperLogLogs: ferry and asynq use none
		}
		if err != nil {
			if errors.Is(err, miniredis.ErrKeyNotFound) {
				continue
			}
			return fmt.Errorf("embedded Redis snapshot: key %q: %w", k, err)
		}
		s.Keys = append(s.Keys, it)
	}
	if err := writeJSON(r.opts.SnapshotFile, s); err != nil {
		return fmt.Errorf("embedded Redis snapshot: %w", err)
	}
	return nil
}

func (r *Redis) load(path string) error {
	var s snapshot
	if err := readJSON(path, &s); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("embedded Redis: load snapshot: %w", err)
	}
	m := r.m
	for _, it := range s.Keys {
		var err error
		switch it.Type {
		case "string":
			err = m.Set(it.Key, it.String)
		case "hash":
			for f, v := range it.Hash {
				m.HSet(it.Key, f, v)
			}
		case "list":
			_, err = m.Push(it.Key, it.List...)
		case "set":
			_, err = m.SetAdd(it.Key, it.Set...)
		case "zset":
			for mem, sc := range it.ZSet {
				if _, err = m.ZAdd(it.Key, sc, mem); err != nil {
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("embedded Redis: load snapshot %s: key %q: %w", path, it.Key, err)
		}
		if it.TTLms > 0 {
			m.SetTTL(it.Key, time.Duration(it.TTLms)*time.Millisecond)
		}
	}
	return nil
}
