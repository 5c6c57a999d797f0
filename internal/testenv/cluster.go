package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis Cluster and Sentinel sets for the tests of issue 14 (make
// test-cluster). They are built from Debian's redis-server alone — no
// redis-cli, no redis-sentinel package: the cluster is joined with CLUSTER
// MEET / ADDSLOTSRANGE / REPLICATE and sentinels run as
// `redis-server sentinel.conf --sentinel`. Every process binds 127.0.0.1 and
// dies with the test binary (Pdeathsig).
//
// Timeouts are short on purpose (cluster-node-timeout and
// down-after-milliseconds of 1 s), so a failover test sees a replica promoted
// in a few seconds instead of Redis' production defaults of 15–30 s.

// failoverTimeout is both cluster-node-timeout and Sentinel's
// down-after-milliseconds.
const failoverTimeout = 1000 * time.Millisecond

// RedisCluster is a real Redis Cluster: three masters, each with one
// replica, on loopback ports.
type RedisCluster struct {
	// Nodes are the six processes: Nodes[0..2] start as masters of slots
	// 0–5460, 5461–10922 and 10923–16383; Nodes[3+i] replicates Nodes[i].
	Nodes []*RedisProcess
	tmp   string // removed by Stop when StartRedisCluster made it
}

// Addrs are the nodes' host:port, the seed list for a cluster client.
func (c *RedisCluster) Addrs() []string {
	a := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		a[i] = n.Addr
	}
	return a
}

// Client returns a cluster client on c, closed by the caller.
func (c *RedisCluster) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
}

// Stop stops every node.
func (c *RedisCluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
	if c.tmp != "" {
		_ = os.RemoveAll(c.tmp)
	}
}

// StartRedisCluster starts six redis-server processes in cluster mode under
// dir (a temp dir when empty) and joins them into a cluster of three masters
// with one replica each. It returns when every node reports cluster_state:ok
// and every replica has finished its first sync.
func StartRedisCluster(dir string) (*RedisCluster, error) {
	c := &RedisCluster{}
	if dir == "" {
		d, err := os.MkdirTemp("", "ferry-cluster-")
		if err != nil {
			return nil, fmt.Errorf("cluster temp dir: %w", err)
		}
		dir = d
		c.tmp = d
	}
	for i := range 6 {
		nd := filepath.Join(dir, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(nd, 0o755); err != nil {
			return nil, fmt.Errorf("cluster node dir: %w", err)
		}
		p, err := StartRedisProcess("", nd, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(int(failoverTimeout/time.Millisecond)),
			// AOF as production should run it (docs/operations.md).
			"--appendonly", "yes", "--appendfsync", "everysec")
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("cluster node %d: %w", i, err)
		}
		c.Nodes = append(c.Nodes, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.join(ctx); err != nil {
		c.Stop()
		return nil, fmt.Errorf("form redis cluster (logs in %s): %w", dir, err)
	}
	return c, nil
}

// join meets the nodes, assigns slots to the first three, makes the last
// three their replicas and waits for the cluster to settle.
func (c *RedisCluster) join(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.Nodes))
	for i, n := range c.Nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr})
		defer clients[i].Close()
	}
	host, port0 := splitAddr(c.Nodes[0].Addr)
	for _, cl := range clients[1:] {
		if err := cl.ClusterMeet(ctx, host, port0).Err(); err != nil {
			return fmt.Errorf("CLUSTER MEET: %w", err)
		}
	}
	ranges := [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}
	ids := make([]string, 3)
	for i, r := range ranges {
		if err := clients[i].Do(ctx, "CLUSTER", "ADDSLOTSRANGE", r[0], r[1]).Err(); err != nil {
			return fmt.Errorf("CLUSTER ADDSLOTSRANGE on %s: %w", c.Nodes[i].Addr, err)
		}
		id, err := clients[i].Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			return fmt.Errorf("CLUSTER MYID: %w", err)
		}
		ids[i] = id
	}
	// A replica can only REPLICATE a master it already knows.
	if err := waitFor(ctx, "every node to know all six", func() (bool, error) {
		for _, cl := range clients {
			nodes, err := cl.ClusterNodes(ctx).Result()
			if err != nil {
				return false, err
			}
			if strings.Count(strings.TrimSpace(nodes), "\n")+1 < len(clients) {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		return err
	}
	for i, cl := range clients[3:] {
		if err := cl.Do(ctx, "CLUSTER", "REPLICATE", ids[i]).Err(); err != nil {
			return fmt.Errorf("CLUSTER REPLICATE on %s: %w", c.Nodes[3+i].Addr, err)
		}
	}
	return waitFor(ctx, "cluster_state:ok and replicas in sync", func() (bool, error) {
		for _, cl := range clients {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				return false, err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return false, nil
			}
		}
		for _, cl := range clients[3:] {
			repl, err := cl.Info(ctx, "replication").Result()
			if err != nil {
				return false, err
			}
			if !strings.Contains(repl, "master_link_status:up") {
				return false, nil
			}
		}
		return true, nil
	})
}

// MasterOf returns the node currently serving key's slot as master, asked
// of the cluster itself (after a failover it is a former replica).
func (c *RedisCluster) MasterOf(ctx context.Context, key string) (*RedisProcess, error) {
	cc := c.Client()
	defer cc.Close()
	// Reload the slot map: after a failover the client's cached one is old.
	cc.ReloadState(ctx)
	m, err := cc.MasterForKey(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("master for key %q: %w", key, err)
	}
	addr := m.Options().Addr
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n, nil
		}
	}
	return nil, fmt.Errorf("master %s of key %q is not a node of this cluster", addr, key)
}

// RedisSentinelSet is a Redis master with one replica, watched by three
// sentinels under the master name SentinelMasterName.
type RedisSentinelSet struct {
	Master    *RedisProcess
	Replica   *RedisProcess
	Sentinels []*RedisProcess
	tmp       string // removed by Stop when StartRedisSentinelSet made it
}

// SentinelMasterName is the name the sentinels monitor.
const SentinelMasterName = "ferry"

// SentinelAddrs are the sentinels' host:port.
func (s *RedisSentinelSet) SentinelAddrs() []string {
	a := make([]string, len(s.Sentinels))
	for i, n := range s.Sentinels {
		a[i] = n.Addr
	}
	return a
}

// Client returns a failover client (go-redis asks the sentinels for the
// master), closed by the caller.
func (s *RedisSentinelSet) Client() *redis.Client {
	return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMasterName, SentinelAddrs: s.SentinelAddrs()})
}

// Stop stops every process.
func (s *RedisSentinelSet) Stop() {
	for _, p := range s.Sentinels {
		p.Stop()
	}
	if s.Replica != nil {
		s.Replica.Stop()
	}
	if s.Master != nil {
		s.Master.Stop()
	}
	if s.tmp != "" {
		_ = os.RemoveAll(s.tmp)
	}
}

// StartRedisSentinelSet starts a master, a replica of it and three sentinels
// (quorum 2) under dir (a temp dir when empty), and returns when the
// sentinels have found the replica.
func StartRedisSentinelSet(dir string) (*RedisSentinelSet, error) {
	s := &RedisSentinelSet{}
	if dir == "" {
		d, err := os.MkdirTemp("", "ferry-sentinel-")
		if err != nil {
			return nil, fmt.Errorf("sentinel temp dir: %w", err)
		}
		dir = d
		s.tmp = d
	}
	var err error
	mk := func(name string) (string, error) {
		d := filepath.Join(dir, name)
		return d, os.MkdirAll(d, 0o755)
	}
	md, err := mk("master")
	if err != nil {
		return nil, err
	}
	if s.Master, err = StartRedisProcess("", md, "--appendonly", "yes"); err != nil {
		return nil, fmt.Errorf("sentinel set master: %w", err)
	}
	rd, err := mk("replica")
	if err != nil {
		return nil, err
	}
	host, port := splitAddr(s.Master.Addr)
	if s.Replica, err = StartRedisProcess("", rd, "--appendonly", "yes", "--replicaof", host, port); err != nil {
		s.Master.Stop()
		return nil, fmt.Errorf("sentinel set replica: %w", err)
	}
	for i := range 3 {
		sd, err := mk("sentinel" + strconv.Itoa(i))
		if err != nil {
			s.Stop()
			return nil, err
		}
		// Sentinel rewrites its config file: it must be its own and writable.
		conf := filepath.Join(sd, "sentinel.conf")
		body := fmt.Sprintf("sentinel monitor %s %s %s 2\nsentinel down-after-milliseconds %s %d\nsentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
			SentinelMasterName, host, port, SentinelMasterName, failoverTimeout/time.Millisecond, SentinelMasterName, SentinelMasterName)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			s.Stop()
			return nil, err
		}
		p, err := startSentinel(conf, sd)
		if err != nil {
			s.Stop()
			return nil, fmt.Errorf("sentinel %d: %w", i, err)
		}
		s.Sentinels = append(s.Sentinels, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitFor(ctx, "sentinels to see the replica and each other", func() (bool, error) {
		for _, sn := range s.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr})
			reps, err := c.Replicas(ctx, SentinelMasterName).Result()
			others, err2 := c.Sentinels(ctx, SentinelMasterName).Result()
			c.Close()
			if err = errors.Join(err, err2); err != nil {
				return false, err
			}
			if len(reps) < 1 || len(others) < 2 {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		s.Stop()
		return nil, fmt.Errorf("sentinel set (files in %s): %w", dir, err)
	}
	return s, nil
}

// MasterAddr asks a sentinel which address is the master now.
func (s *RedisSentinelSet) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, sn := range s.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr})
		a, err := c.GetMasterAddrByName(ctx, SentinelMasterName).Result()
		c.Close()
		if err == nil && len(a) == 2 {
			return a[0] + ":" + a[1], nil
		}
		last = err
	}
	return "", fmt.Errorf("no sentinel named the master: %w", last)
}

// startSentinel runs redis-server in sentinel mode on a free port. The port
// and bind go on the command line; conf holds the monitor lines.
func startSentinel(conf, dir string) (*RedisProcess, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	p := &RedisProcess{Addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir,
		args: []string{conf, "--sentinel", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir}}
	if p.bin, err = lookRedisServer(); err != nil {
		return nil, err
	}
	return p, p.Start()
}

func splitAddr(addr string) (host, port string) {
	i := strings.LastIndex(addr, ":")
	return addr[:i], addr[i+1:]
}

// waitFor polls cond every 100 ms until it holds or ctx ends; what names the
// condition in the error.
func waitFor(ctx context.Context, what string, cond func() (bool, error)) error {
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, errors.Join(ctx.Err(), last))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
