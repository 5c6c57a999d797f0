package clustertest

import (
	"os"
	"sync"
	"testing"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/internal/workerproc"
)

// EnvCluster enables the tests.
const EnvCluster = "FERRY_CLUSTER"

func requireCluster(t *testing.T) {
	t.Helper()
	if os.Getenv(EnvCluster) != "1" {
		t.Skipf("Redis Cluster/Sentinel tests run with %s=1 (make test-cluster)", EnvCluster)
	}
}

func TestMain(m *testing.M) {
	if workerproc.IsChild() {
		// TestWorkerKillOnCluster's worker processes are this binary.
		os.Exit(workerproc.ChildMain())
	}
	os.Exit(testenv.Run(m))
}

var (
	clusterOnce sync.Once
	cluster     *testenv.RedisCluster
	clusterErr  error

	sentinelOnce sync.Once
	sentinel     *testenv.RedisSentinelSet
	sentinelErr  error
)

// sharedCluster is the test binary's Redis Cluster, started on first use and
// stopped when the binary ends. Tests isolate themselves by queue name.
// Tests that fail a master over start a cluster of their own.
func sharedCluster(t *testing.T) *testenv.RedisCluster {
	t.Helper()
	clusterOnce.Do(func() {
		cluster, clusterErr = testenv.StartRedisCluster("")
		if clusterErr == nil {
			testenv.OnStop(cluster.Stop)
		}
	})
	if clusterErr != nil {
		t.Fatal(clusterErr)
	}
	return cluster
}

// sharedSentinel is the test binary's Sentinel set, like sharedCluster.
func sharedSentinel(t *testing.T) *testenv.RedisSentinelSet {
	t.Helper()
	sentinelOnce.Do(func() {
		sentinel, sentinelErr = testenv.StartRedisSentinelSet("")
		if sentinelErr == nil {
			testenv.OnStop(sentinel.Stop)
		}
	})
	if sentinelErr != nil {
		t.Fatal(sentinelErr)
	}
	return sentinel
}
