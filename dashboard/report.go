package dashboard

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strconv"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/tasks"
)

// reportBody is the body of GET /api/v1/transfers/{id}/report.
type reportBody struct {
	TaskID string      `json:"task_id"`
	State  tasks.State `json:"state"`
	Queue  string      `json:"queue"`
	// Report is the migration's report, written when it ends (completed,
	// or failed with some objects failed: Failures names them with their
	// reasons); absent while it runs.
	Report *tasks.MigrateReport `json:"report,omitempty"`
	// Rerun is the command that runs the migration again: it decides from
	// both listings as they are then, so it copies only what failed or
	// changed since (and what is new).
	Rerun string `json:"rerun"`
}

func (s *Server) handleV1Report(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	info, err := s.client.Lookup(r.Context(), id)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		s.writeAPIErr(w, &apiError{status: http.StatusNotFound, Code: "not_found",
			Message: "no migration " + strconv.Quote(id) + " in the queues: a finished task and its report are kept 24 h"})
		return
	case err != nil:
		s.writeAPIErr(w, s.redisDown("look up the migration", err))
		return
	}
	if info.Type != tasks.TypeMigrate {
		s.writeAPIErr(w, &apiError{status: http.StatusConflict, Code: "not_a_migration",
			Message: "transfer " + strconv.Quote(id) + " is a " + info.Type + ": only a migration has a report"})
		return
	}
	var p tasks.MigratePayload
	if err := json.Unmarshal(info.Payload, &p); err != nil {
		s.writeAPIErr(w, &apiError{status: http.StatusConflict, Code: "not_a_migration", Message: "the task's payload is not a migration's: " + err.Error()})
		return
	}
	body := reportBody{TaskID: id, State: progressFromState(info.State), Queue: info.Queue, Rerun: tasks.MigrateCommand(p, info.Queue)}
	if pr, ok := s.hub.get(id); ok {
		body.State = pr.State
	}
	if len(info.Result) > 0 && (info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived) {
		var rep tasks.MigrateReport
		if json.Unmarshal(info.Result, &rep) == nil {
			body.Report = &rep
		}
	}
	writeJSON(w, http.StatusOK, body)
}

// progressFromState is the progress state of an asynq task state.
func progressFromState(st asynq.TaskState) tasks.State {
	switch st {
	case asynq.TaskStateActive:
		return tasks.StateActive
	case asynq.TaskStateRetry:
		return tasks.StateRetrying
	case asynq.TaskStateArchived:
		return tasks.StateFailed
	case asynq.TaskStateCompleted:
		return tasks.StateCompleted
	}
	return tasks.StatePending
}

var docReport = operationDoc{id: "getMigrationReport", summary: "A migration's report (counts, failed keys with their reasons) and the command that re-runs it",
	params: []paramDoc{idParam},
	responses: []responseDoc{{status: 200, desc: "the report (absent while the migration runs) and the re-run command", schema: reflect.TypeFor[reportBody]()},
		{status: 404, desc: "no such task in the queues (kept 24 h after it ends)"}, {status: 409, desc: "the transfer is not a migration"}, unavailable}}
