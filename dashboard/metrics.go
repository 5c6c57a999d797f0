package dashboard

import (
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Queue metric descriptors. The names and labels are those of
// github.com/hibiken/asynq/x/metrics, so asynqmon's Prometheus charts and
// existing Grafana boards work unchanged.
var (
	queueTasksDesc = prometheus.NewDesc("asynq_tasks_enqueued_total",
		"Number of tasks enqueued; broken down by queue and state.", []string{"queue", "state"}, nil)
	queueSizeDesc = prometheus.NewDesc("asynq_queue_size",
		"Number of tasks in a queue", []string{"queue"}, nil)
	queueLatencyDesc = prometheus.NewDesc("asynq_queue_latency_seconds",
		"Number of seconds the oldest pending task is waiting in pending state to be processed.", []string{"queue"}, nil)
	queueMemoryDesc = prometheus.NewDesc("asynq_queue_memory_usage_approx_bytes",
		"Number of memory used by a given queue (approximated number by sampling).", []string{"queue"}, nil)
	queueProcessedDesc = prometheus.NewDesc("asynq_tasks_processed_total",
		"Number of tasks processed (both succeeded and failed); broken down by queue", []string{"queue"}, nil)
	queueFailedDesc = prometheus.NewDesc("asynq_tasks_failed_total",
		"Number of tasks failed; broken down by queue", []string{"queue"}, nil)
	queuePausedDesc = prometheus.NewDesc("asynq_queue_paused_total",
		"Number of queues paused", []string{"queue"}, nil)
	queueUpDesc = prometheus.NewDesc("ferry_dashboard_queue_metrics_up",
		"1 when the last collection of asynq queue metrics succeeded, 0 when Redis could not be read.", nil, nil)
)

// QueueCollector is a prometheus.Collector of asynq's queue metrics (sizes
// by state, latency, memory, processed and failed totals, paused), read
// through an Inspector at every scrape. It is the collector of
// github.com/hibiken/asynq/x/metrics, which ferry does not depend on (its
// only release predates asynq v0.26 and logs through the global logger), plus
// ferry_dashboard_queue_metrics_up.
type QueueCollector struct {
	inspector *asynq.Inspector
	log       *zap.Logger
}

// NewQueueCollector returns a QueueCollector reading through inspector.
// log (nil: none) receives collection errors.
func NewQueueCollector(inspector *asynq.Inspector, log *zap.Logger) *QueueCollector {
	if log == nil {
		log = zap.NewNop()
	}
	return &QueueCollector{inspector: inspector, log: log}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueTasksDesc, queueSizeDesc, queueLatencyDesc, queueMemoryDesc,
		queueProcessedDesc, queueFailedDesc, queuePausedDesc, queueUpDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	infos, err := c.queueInfos()
	up := 1.0
	if err != nil {
		c.log.Warn("dashboard: collect asynq queue metrics", zap.Error(err))
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(queueUpDesc, prometheus.GaugeValue, up)
	for _, q := range infos {
		for _, s := range []struct {
			state string
			n     int
		}{
			{"active", q.Active}, {"pending", q.Pending}, {"scheduled", q.Scheduled},
			{"retry", q.Retry}, {"archived", q.Archived}, {"completed", q.Completed},
			{"aggregating", q.Aggregating},
		} {
			ch <- prometheus.MustNewConstMetric(queueTasksDesc, prometheus.GaugeValue, float64(s.n), q.Queue, s.state)
		}
		ch <- prometheus.MustNewConstMetric(queueSizeDesc, prometheus.GaugeValue, float64(q.Size), q.Queue)
		ch <- prometheus.MustNewConstMetric(queueLatencyDesc, prometheus.GaugeValue, q.Latency.Seconds(), q.Queue)
		ch <- prometheus.MustNewConstMetric(queueMemoryDesc, prometheus.GaugeValue, float64(q.MemoryUsage), q.Queue)
		ch <- prometheus.MustNewConstMetric(queueProcessedDesc, prometheus.CounterValue, float64(q.ProcessedTotal), q.Queue)
		ch <- prometheus.MustNewConstMetric(queueFailedDesc, prometheus.CounterValue, float64(q.FailedTotal), q.Queue)
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(queuePausedDesc, prometheus.GaugeValue, paused, q.Queue)
	}
}

// queueInfos reads every queue's info; on an error it returns the queues
// read so far.
func (c *QueueCollector) queueInfos() ([]*asynq.QueueInfo, error) {
	names, err := c.inspector.Queues()
	if err != nil {
		return nil, err
	}
	infos := make([]*asynq.QueueInfo, 0, len(names))
	for _, name := range names {
		q, err := c.inspector.GetQueueInfo(name)
		if err != nil {
			return infos, err
		}
		infos = append(infos, q)
	}
	return infos, nil
}

// serverMetrics are the dashboard's own metrics.
type serverMetrics struct {
	clients     prometheus.Gauge
	messages    prometheus.Counter
	indexed     prometheus.Gauge
	scanSeconds prometheus.Histogram
}

func newServerMetrics() *serverMetrics {
	return &serverMetrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_dashboard_event_clients",
			Help: "Open /api/events streams.",
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_dashboard_progress_messages_total",
			Help: "Progress messages received on the ferry:progress channel.",
		}),
		indexed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_dashboard_transfers_indexed",
			Help: "Transfers in the dashboard's index (at the last listing).",
		}),
		scanSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ferry_dashboard_scan_duration_seconds",
			Help:    "Duration of the SCAN that reconciles the transfer index.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
	}
}

// Describe implements prometheus.Collector.
func (m *serverMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.clients.Describe(ch)
	m.messages.Describe(ch)
	m.indexed.Describe(ch)
	m.scanSeconds.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *serverMetrics) Collect(ch chan<- prometheus.Metric) {
	m.clients.Collect(ch)
	m.messages.Collect(ch)
	m.indexed.Collect(ch)
	m.scanSeconds.Collect(ch)
}
