package dashboard

import (
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/ferryhq/ferry/tasks"
)

// The fleet views of the front page: the aggregate throughput of the last
// 15 minutes (tasks.Throughput: per-bucket counters every worker adds to)
// and the workers with the transfers they run (asynq's Inspector.Servers:
// each worker process's heartbeat with its active tasks).

// throughputBody is the body of GET /api/v1/throughput.
type throughputBody struct {
	// BucketSeconds is the width of one point; WindowSeconds how far back
	// the points go.
	BucketSeconds int `json:"bucket_seconds"`
	WindowSeconds int `json:"window_seconds"`
	// Points are the buckets, oldest first; the last is the one in
	// progress (partial).
	Points []tasks.ThroughputPoint `json:"points"`
	// TotalBytes is every point's bytes; AverageRate is TotalBytes over the
	// window; PeakRate the highest rate of a complete bucket.
	TotalBytes  int64   `json:"total_bytes"`
	AverageRate float64 `json:"average_rate"`
	PeakRate    float64 `json:"peak_rate"`
}

func (s *Server) handleV1Throughput(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	points, err := tasks.Throughput(r.Context(), s.cfg.Redis, now)
	if err != nil {
		s.writeAPIErr(w, s.redisDown("read the throughput", err))
		return
	}
	body := throughputBody{
		BucketSeconds: int(tasks.ThroughputBucket / time.Second),
		WindowSeconds: int(tasks.ThroughputWindow / time.Second),
		Points:        points,
	}
	for _, p := range points {
		body.TotalBytes += p.Bytes
		if !p.Partial {
			body.PeakRate = max(body.PeakRate, p.Rate)
		}
	}
	body.AverageRate = float64(body.TotalBytes) / tasks.ThroughputWindow.Seconds()
	writeJSON(w, http.StatusOK, body)
}

// workersBody is the body of GET /api/v1/workers.
type workersBody struct {
	Workers []workerServer `json:"workers"`
}

// workerServer is one worker process (an asynq server), as its last
// heartbeat (every 5 s) describes it.
type workerServer struct {
	ID          string         `json:"id"`
	Host        string         `json:"host"`
	PID         int            `json:"pid"`
	Concurrency int            `json:"concurrency"`
	Queues      map[string]int `json:"queues"`
	Started     time.Time      `json:"started"`
	// Status is asynq's: "active", or "stopped" while it shuts down.
	Status string `json:"status"`
	// Active are the tasks it runs, longest running first.
	Active []workerTask `json:"active"`
}

// workerTask is one task a worker runs.
type workerTask struct {
	TaskID   string    `json:"task_id"`
	Type     string    `json:"type"`
	Queue    string    `json:"queue"`
	Started  time.Time `json:"started"`
	Deadline time.Time `json:"deadline,omitzero"`
	// Transfer is its progress when the dashboard knows it.
	Transfer *Transfer `json:"transfer,omitempty"`
}

func (s *Server) handleV1Workers(w http.ResponseWriter, r *http.Request) {
	servers, err := s.client.Inspector().Servers()
	if err != nil {
		s.writeAPIErr(w, s.redisDown("list the workers", err))
		return
	}
	body := workersBody{Workers: make([]workerServer, 0, len(servers))}
	for _, sv := range servers {
		ws := workerServer{ID: sv.ID, Host: sv.Host, PID: sv.PID, Concurrency: sv.Concurrency, Queues: sv.Queues,
			Started: sv.Started.UTC(), Status: sv.Status, Active: make([]workerTask, 0, len(sv.ActiveWorkers))}
		if ws.Queues == nil {
			ws.Queues = map[string]int{}
		}
		for _, a := range sv.ActiveWorkers {
			wt := workerTask{TaskID: a.TaskID, Type: a.TaskType, Queue: a.Queue, Started: a.Started.UTC()}
			if !a.Deadline.IsZero() {
				wt.Deadline = a.Deadline.UTC()
			}
			if p, ok := s.hub.get(a.TaskID); ok {
				tr := NewTransfer(p)
				wt.Transfer = &tr
			}
			ws.Active = append(ws.Active, wt)
		}
		slices.SortFunc(ws.Active, func(a, b workerTask) int {
			if c := a.Started.Compare(b.Started); c != 0 {
				return c
			}
			return strings.Compare(a.TaskID, b.TaskID)
		})
		body.Workers = append(body.Workers, ws)
	}
	slices.SortFunc(body.Workers, func(a, b workerServer) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		if a.PID != b.PID {
			return a.PID - b.PID
		}
		return strings.Compare(a.ID, b.ID)
	})
	writeJSON(w, http.StatusOK, body)
}

var (
	docThroughput = operationDoc{id: "getThroughput", summary: "Aggregate throughput of every worker over the last 15 minutes, in 10-second buckets",
		responses: []responseDoc{{status: 200, desc: "the buckets, oldest first", schema: reflect.TypeFor[throughputBody]()}, unavailable}}
	docWorkers = operationDoc{id: "listWorkers", summary: "Worker processes (asynq servers) and the transfers each runs now",
		responses: []responseDoc{{status: 200, desc: "the workers, by host and pid", schema: reflect.TypeFor[workersBody]()}, unavailable}}
)
