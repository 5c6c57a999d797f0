package faulttest

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"os"
	"sync"
	"time"
)

// logTracker follows the JSON logs of the worker processes (started with
// Debug, so every part and every task start is logged) to say which worker
// is running which task right now: what the kill loop needs to SIGKILL the
// worker in the middle of a chosen task.
type logTracker struct {
	mu    sync.Mutex
	files map[string]*trackedLog // worker name → its log
	// writer is, per task, the worker of its latest "part uploaded" or
	// "taking over an upload" line; runner the worker of its latest
	// "task started" (a run of asynq).
	writer map[string]logEvent
	runner map[string]logEvent
	// items is, per worker and batch, what its log says of each item:
	// logged done ("batch item done"), then written to the batch's record
	// ("batch items recorded", which comes in groups, see worker/batch.go).
	items map[string]map[string]*batchLog
}

// batchLog is what one worker's log says of the items of one batch.
type batchLog struct {
	done, recorded map[int]bool
}

func (l *batchLog) clone() *batchLog {
	if l == nil {
		return &batchLog{done: map[int]bool{}, recorded: map[int]bool{}}
	}
	return &batchLog{done: maps.Clone(l.done), recorded: maps.Clone(l.recorded)}
}

type logEvent struct {
	worker string
	at     time.Time
}

type trackedLog struct {
	path    string
	off     int64
	partial []byte
}

func newLogTracker() *logTracker {
	return &logTracker{files: map[string]*trackedLog{}, writer: map[string]logEvent{}, runner: map[string]logEvent{},
		items: map[string]map[string]*batchLog{}}
}

// add follows the log of a worker from its start.
func (lt *logTracker) add(worker, path string) {
	lt.mu.Lock()
	lt.files[worker] = &trackedLog{path: path}
	lt.mu.Unlock()
}

// poll reads what the logs gained since the last poll.
func (lt *logTracker) poll() {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	for name, f := range lt.files {
		fh, err := os.Open(f.path)
		if err != nil {
			continue
		}
		if _, err := fh.Seek(f.off, io.SeekStart); err != nil {
			fh.Close()
			continue
		}
		b, _ := io.ReadAll(fh)
		fh.Close()
		f.off += int64(len(b))
		b = append(f.partial, b...)
		i := bytes.LastIndexByte(b, '\n')
		if i < 0 {
			f.partial = b
			continue
		}
		f.partial = append([]byte(nil), b[i+1:]...)
		for _, line := range bytes.Split(b[:i], []byte{'\n'}) {
			lt.line(name, line)
		}
	}
}

func (lt *logTracker) line(worker string, line []byte) {
	var e struct {
		TS     float64 `json:"ts"`
		Msg    string  `json:"msg"`
		TaskID string  `json:"task_id"`
		Item   int     `json:"item"`
		Items  []int   `json:"items"`
	}
	if json.Unmarshal(line, &e) != nil || e.TaskID == "" {
		return
	}
	ev := logEvent{worker: worker, at: time.Unix(0, int64(e.TS*1e9))}
	switch e.Msg {
	case "part uploaded", "taking over a task whose worker stopped renewing its ownership":
		lt.writer[e.TaskID] = ev
	case "task started":
		lt.runner[e.TaskID] = ev
	case "batch item done":
		lt.batchLog(worker, e.TaskID).done[e.Item] = true
	case "batch items recorded":
		for _, i := range e.Items {
			lt.batchLog(worker, e.TaskID).recorded[i] = true
		}
	}
}

// batchLog is worker's log of batch task, created empty. Callers hold mu.
func (lt *logTracker) batchLog(worker, task string) *batchLog {
	if lt.items[worker] == nil {
		lt.items[worker] = map[string]*batchLog{}
	}
	l := lt.items[worker][task]
	if l == nil {
		l = &batchLog{done: map[int]bool{}, recorded: map[int]bool{}}
		lt.items[worker][task] = l
	}
	return l
}

// batchItems returns a copy of what worker's log says of batch task's
// items so far.
func (lt *logTracker) batchItems(worker, task string) *batchLog {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return lt.items[worker][task].clone()
}

// writerOf returns the worker that wrote the task's latest part (or took
// it over), and when.
func (lt *logTracker) writerOf(task string) (logEvent, bool) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	e, ok := lt.writer[task]
	return e, ok
}

// runnerOf returns the worker whose asynq run of the task started last.
func (lt *logTracker) runnerOf(task string) (logEvent, bool) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	e, ok := lt.runner[task]
	return e, ok
}

// writing lists the tasks whose latest part was written after since.
func (lt *logTracker) writing(since time.Time) map[string]logEvent {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	m := map[string]logEvent{}
	for id, e := range lt.writer {
		if e.at.After(since) {
			m[id] = e
		}
	}
	return m
}

// picked reports whether worker took the task up after since: took it
// over (or wrote a part of it) when takeover is set, else started a run of
// it.
func (lt *logTracker) picked(task, worker string, since time.Time, takeover bool) bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	m := lt.runner
	if takeover {
		m = lt.writer
	}
	e, ok := m[task]
	return ok && e.worker == worker && e.at.After(since)
}
