package dashboard

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/tasks"
)

// progressKeyPattern matches every tasks.ProgressKey ("{" and "}" are not
// special in SCAN's glob).
var progressKeyPattern = tasks.ProgressKey("*")

// scanBatch is the COUNT of each SCAN and the HGETALLs per pipeline.
const scanBatch = 500

// clientBuffer is the events queued for one SSE client; a client that falls
// further behind is disconnected (its EventSource reconnects and reloads).
const clientBuffer = 256

// hub owns the dashboard's one tasks.ProgressFeed, the index of transfers it
// feeds, and the SSE clients it fans updates out to.
type hub struct {
	rdb      redis.UniversalClient
	log      *zap.Logger
	interval time.Duration
	max      int
	metrics  *serverMetrics

	ready chan struct{} // closed once subscribed (or when run ends)

	mu    sync.Mutex
	index map[string]tasks.Progress
	// seen is when the hub last stored each index entry, on its own clock:
	// reconcile drops an entry a scan missed only if it was seen before the
	// scan started. UpdatedAt cannot tell: it is the writer's clock, stamped
	// before its HSET, which may land after SCAN passed the key.
	seen    map[string]time.Time
	clients map[*sseClient]struct{}
	closed  bool
}

// hubEvent is one progress update for the event streams.
type hubEvent struct {
	taskID   string
	data     []byte    // JSON of Transfer
	updated  time.Time // the Progress's UpdatedAt: the SSE event id
	terminal bool      // the transfer ended
}

// sseClient is one open event stream.
type sseClient struct {
	events chan hubEvent
	filter map[string]struct{} // task ids wanted; nil means all
	gone   chan struct{}       // closed when the hub drops the client
}

func newHub(rdb redis.UniversalClient, log *zap.Logger, interval time.Duration, max int, m *serverMetrics) *hub {
	return &hub{
		rdb:      rdb,
		log:      log,
		interval: interval,
		max:      max,
		metrics:  m,
		ready:    make(chan struct{}),
		index:    make(map[string]tasks.Progress),
		seen:     make(map[string]time.Time),
		clients:  make(map[*sseClient]struct{}),
	}
}

// run subscribes, scans, and then applies messages and periodic scans until
// ctx is done; then it drops every client.
func (h *hub) run(ctx context.Context) {
	var readyOnce sync.Once
	markReady := func() { readyOnce.Do(func() { close(h.ready) }) }
	defer func() {
		markReady()
		h.mu.Lock()
		h.closed = true
		for c := range h.clients {
			h.dropLocked(c)
		}
		h.mu.Unlock()
	}()

	// Subscribe before the first scan so that no update falls in between.
	var feed *tasks.ProgressFeed
	for {
		var err error
		if feed, err = tasks.SubscribeProgress(ctx, h.rdb); err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		h.log.Warn("dashboard: subscribe to progress failed; retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	defer feed.Close()
	markReady()

	scanDone := make(chan map[string]tasks.Progress, 1)
	var scanStart time.Time // when the running scan started
	scanning, rescan := false, false
	startScan := func() {
		scanning, rescan = true, false
		started := time.Now()
		scanStart = started
		go func() {
			found, err := h.scan(ctx)
			if err != nil {
				if ctx.Err() == nil {
					h.log.Warn("dashboard: scan of progress hashes failed", zap.Error(err))
				}
				found = nil
			}
			h.metrics.scanSeconds.Observe(time.Since(started).Seconds())
			scanDone <- found
		}()
	}
	startScan()
	ticker := time.NewTicker(h.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			if scanning {
				<-scanDone
			}
			return
		case e, ok := <-feed.C:
			switch {
			case !ok:
				if scanning {
					<-scanDone
				}
				return
			case e.Err != nil:
				h.log.Warn("dashboard: progress subscription interrupted; reconnecting", zap.Error(e.Err))
			case e.Resubscribed:
				// Updates published while it was down are lost: rescan.
				if scanning {
					rescan = true // after the running one
				} else {
					startScan()
				}
			default:
				h.metrics.messages.Inc()
				h.apply(e.Progress)
			}
		case found := <-scanDone:
			scanning = false
			if found != nil {
				h.reconcile(found, scanStart)
			}
			if rescan {
				startScan()
			}
		case <-ticker.C:
			if !scanning {
				startScan()
			}
		}
	}
}

// apply records p, unless it does not supersede the indexed value
// (tasks.Progress.Supersedes), and sends it to the clients that want it.
func (h *hub) apply(p tasks.Progress) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.index[p.TaskID]; ok && !p.Supersedes(old) {
		return
	}
	h.index[p.TaskID] = p
	h.seen[p.TaskID] = time.Now()
	h.trimLocked()
	data, err := json.Marshal(NewTransfer(p))
	if err != nil {
		return // a Progress always encodes
	}
	msg := hubEvent{taskID: p.TaskID, data: data, updated: p.UpdatedAt, terminal: p.State.Terminal()}
	for c := range h.clients {
		if c.filter != nil {
			if _, ok := c.filter[p.TaskID]; !ok {
				continue
			}
		}
		select {
		case c.events <- msg:
		default:
			h.log.Info("dashboard: dropping a slow event stream client")
			h.dropLocked(c)
		}
	}
}

// reconcile merges a scan that started at start: newer values win, and
// entries the scan did not find (their hash expired) are removed unless the
// hub stored them since start (see seen).
func (h *hub) reconcile(found map[string]tasks.Progress, start time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.index {
		if _, ok := found[id]; !ok && h.seen[id].Before(start) {
			h.deleteLocked(id)
		}
	}
	for id, p := range found {
		if old, ok := h.index[id]; !ok || p.Supersedes(old) {
			h.index[id] = p
			h.seen[id] = start
		}
	}
	h.trimLocked()
}

func (h *hub) deleteLocked(id string) {
	delete(h.index, id)
	delete(h.seen, id)
}

// trimLocked keeps the index within max: active transfers first, then the
// most recently updated. It trims in batches so that a full index does not
// sort on every update.
func (h *hub) trimLocked() {
	if len(h.index) <= h.max+h.max/10 {
		return
	}
	all := make([]tasks.Progress, 0, len(h.index))
	for _, p := range h.index {
		all = append(all, p)
	}
	sortTransfers(all)
	for _, p := range all[h.max:] {
		h.deleteLocked(p.TaskID)
	}
}

// get returns the indexed transfer id.
func (h *hub) get(id string) (tasks.Progress, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.index[id]
	return p, ok
}

// list returns up to limit indexed transfers, active first, then most
// recently updated.
func (h *hub) list(limit int) []tasks.Progress {
	h.mu.Lock()
	all := make([]tasks.Progress, 0, len(h.index))
	for _, p := range h.index {
		all = append(all, p)
	}
	h.metrics.indexed.Set(float64(len(h.index)))
	h.mu.Unlock()
	sortTransfers(all)
	if limit > 0 && len(all) > limit {
		all = all[:limit]
	}
	return all
}

// sortTransfers orders unfinished transfers before finished ones, then by
// UpdatedAt, newest first, then by id.
func sortTransfers(ps []tasks.Progress) {
	slices.SortFunc(ps, func(a, b tasks.Progress) int {
		if at, bt := a.State.Terminal(), b.State.Terminal(); at != bt {
			if at {
				return 1
			}
			return -1
		}
		if c := b.UpdatedAt.Compare(a.UpdatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.TaskID, b.TaskID)
	})
}

// subscribe registers an SSE client for the given ids (all when none).
// It returns nil when the hub is closed.
func (h *hub) subscribe(ids []string) *sseClient {
	c := &sseClient{events: make(chan hubEvent, clientBuffer), gone: make(chan struct{})}
	if len(ids) > 0 {
		c.filter = make(map[string]struct{}, len(ids))
		for _, id := range ids {
			c.filter[id] = struct{}{}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.clients[c] = struct{}{}
	h.metrics.clients.Inc()
	return c
}

// unsubscribe removes c; it is a no-op when the hub already dropped it.
func (h *hub) unsubscribe(c *sseClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(c)
}

func (h *hub) dropLocked(c *sseClient) {
	if _, ok := h.clients[c]; !ok {
		return
	}
	delete(h.clients, c)
	close(c.gone)
	h.metrics.clients.Dec()
}

// scan reads every progress hash, on every master of a cluster. It stops
// after about 10×max hashes, logging that it did.
func (h *hub) scan(ctx context.Context) (map[string]tasks.Progress, error) {
	limit := 10 * h.max
	cc, ok := h.rdb.(*redis.ClusterClient)
	if !ok {
		found := make(map[string]tasks.Progress)
		return found, h.scanNode(ctx, h.rdb, found, limit)
	}
	var mu sync.Mutex
	found := make(map[string]tasks.Progress)
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		local := make(map[string]tasks.Progress)
		err := h.scanNode(ctx, m, local, limit)
		mu.Lock()
		defer mu.Unlock()
		maps.Copy(found, local)
		return err
	})
	return found, err
}

// scanNode scans one node for progress hashes into found, up to limit.
func (h *hub) scanNode(ctx context.Context, node redis.UniversalClient, found map[string]tasks.Progress, limit int) error {
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, progressKeyPattern, scanBatch).Result()
		if err != nil {
			return err
		}
		if err := h.readHashes(ctx, keys, found); err != nil {
			return err
		}
		if len(found) >= limit {
			h.log.Warn("dashboard: too many progress hashes; the index holds a part of them", zap.Int("read", len(found)))
			return nil
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// readHashes reads the progress hashes keys (through the hub's client, which
// routes them in a cluster) into found.
func (h *hub) readHashes(ctx context.Context, keys []string, found map[string]tasks.Progress) error {
	if len(keys) == 0 {
		return nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(keys))
	_, err := h.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = pipe.HGetAll(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	for i, k := range keys {
		id, ok := taskIDFromKey(k)
		if !ok {
			continue
		}
		m, err := cmds[i].Result()
		if err != nil || len(m) == 0 {
			continue // expired between SCAN and HGETALL
		}
		p, err := tasks.ParseProgress(id, m)
		if err != nil {
			h.log.Debug("dashboard: skipping a malformed progress hash", zap.String("key", k), zap.Error(err))
			continue
		}
		found[id] = p
	}
	return nil
}

// taskIDFromKey inverts tasks.ProgressKey.
func taskIDFromKey(key string) (string, bool) {
	prefix, suffix, _ := strings.Cut(tasks.ProgressKey("\x00"), "\x00")
	if !strings.HasPrefix(key, prefix) || !strings.HasSuffix(key, suffix) || len(key) <= len(prefix)+len(suffix) {
		return "", false
	}
	return key[len(prefix) : len(key)-len(suffix)], true
}
