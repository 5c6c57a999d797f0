package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are ferry's own worker metrics. Queue metrics (sizes, latency)
// come from asynq's collector on the dashboard.
type Metrics struct {
	bytes          *prometheus.CounterVec
	parts          *prometheus.CounterVec
	partsRetried   prometheus.Counter
	resumed        prometheus.Counter
	aborted        *prometheus.CounterVec
	checkpointOps  *prometheus.CounterVec
	taskDuration   *prometheus.HistogramVec
	partsSkipped   prometheus.Counter
	bufferCapacity prometheus.Gauge
}

// NewMetrics registers the worker metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bytes_transferred_total",
			Help: "Bytes moved, by direction (upload: to S3; download: from S3 or https) and profile."}, []string{"direction", "profile"}),
		parts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_parts_uploaded_total",
			Help: "Multipart parts uploaded, by profile."}, []string{"profile"}),
		partsRetried: prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_parts_retried_total",
			Help: "Parts uploaded again because a resumed upload's server copy did not match the checkpoint."}),
		partsSkipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_parts_skipped_total",
			Help: "Parts a resumed upload did not upload again (checkpoint and ListParts agreed)."}),
		resumed: prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_uploads_resumed_total",
			Help: "Multipart uploads resumed from a checkpoint."}),
		aborted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_uploads_aborted_total",
			Help: "Multipart uploads aborted, by reason (cancelled, failed, source-changed, checksum-mode-changed, integrity, janitor)."}, []string{"reason"}),
		checkpointOps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_checkpoint_operations_total",
			Help: "Checkpoint store operations, by operation."}, []string{"op"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ferry_task_duration_seconds",
			Help:    "Task run time, by type and outcome (success, retry, failed, cancelled).",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 10)}, []string{"type", "outcome"}),
		bufferCapacity: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ferry_part_buffer_budget_bytes",
			Help: "The worker-wide part buffer budget."}),
	}
	reg.MustRegister(m.bytes, m.parts, m.partsRetried, m.partsSkipped, m.resumed, m.aborted, m.checkpointOps, m.taskDuration, m.bufferCapacity)
	return m
}

// The methods are nil-safe so the worker calls them unconditionally.

func (m *Metrics) addBytes(direction, profile string, n int64) {
	if m != nil {
		m.bytes.WithLabelValues(direction, profile).Add(float64(n))
	}
}

func (m *Metrics) partUploaded(profile string) {
	if m != nil {
		m.parts.WithLabelValues(profile).Inc()
	}
}

func (m *Metrics) partsResumed(skipped, redone int) {
	if m != nil {
		m.resumed.Inc()
		m.partsSkipped.Add(float64(skipped))
		m.partsRetried.Add(float64(redone))
	}
}

func (m *Metrics) uploadAborted(reason string) {
	if m != nil {
		m.aborted.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) checkpointOp(op string) {
	if m != nil {
		m.checkpointOps.WithLabelValues(op).Inc()
	}
}

func (m *Metrics) taskDone(typ, outcome string, d time.Duration) {
	if m != nil {
		m.taskDuration.WithLabelValues(typ, outcome).Observe(d.Seconds())
	}
}

func (m *Metrics) setBudget(b int64) {
	if m != nil {
		m.bufferCapacity.Set(float64(b))
	}
}
