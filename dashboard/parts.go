package dashboard

import (
	"errors"
	"net/http"
	"reflect"

	"go.uber.org/zap"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/tasks"
)

// partsBody is the body of GET /api/v1/transfers/{id}/parts: the parts map
// of a multipart transfer.
type partsBody struct {
	TaskID string      `json:"task_id"`
	State  tasks.State `json:"state"`
	// PartsTotal is the number of parts (0: not multipart, or not known
	// yet); PartSize the size of each but the last, from the checkpoint.
	PartsTotal int   `json:"parts_total"`
	PartSize   int64 `json:"part_size,omitempty"`
	// Checkpoint says whether the task's checkpoint exists: Done is then
	// its finished parts. Without one, Done is every part of a completed
	// transfer (the checkpoint is deleted on completion) and none
	// otherwise (not started, or aborted).
	Checkpoint bool `json:"checkpoint"`
	// Done are the finished part numbers, ascending.
	Done []int `json:"done"`
	// Resumed are the parts the current (or last) run found done by an
	// earlier attempt, a subset of Done while the checkpoint exists.
	Resumed []int `json:"resumed"`
	// InFlight are the parts being sent now (an active transfer only).
	InFlight []int `json:"in_flight"`
}

func (s *Server) handleV1Parts(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p, err := s.transferProgress(r.Context(), id)
	if err != nil {
		s.writeAPIErr(w, err)
		return
	}
	body := partsBody{TaskID: id, State: p.State, PartsTotal: p.PartsTotal, Done: []int{}, Resumed: []int{}, InFlight: []int{}}
	ck, err := s.ckpt.Load(r.Context(), id)
	var corrupt *checkpoint.CorruptError
	switch {
	case err == nil:
		body.Checkpoint = true
		body.PartSize = ck.Plan.PartSize
		if body.PartsTotal == 0 {
			body.PartsTotal = ck.Plan.PartCount
		}
		for _, part := range ck.Parts {
			body.Done = append(body.Done, part.Number)
		}
	case errors.Is(err, checkpoint.ErrNotFound), errors.Is(err, checkpoint.ErrInvalid), errors.As(err, &corrupt):
		if corrupt != nil {
			s.log.Warn("api: a corrupt checkpoint (its worker starts the upload over)", zap.String("task_id", id), zap.Error(err))
		}
		if p.State == tasks.StateCompleted {
			for n := 1; n <= p.PartsTotal; n++ {
				body.Done = append(body.Done, n)
			}
		}
	default:
		s.writeAPIErr(w, s.redisDown("read the checkpoint", err))
		return
	}
	// The worker writes these lists itself; one it cannot parse is shown
	// as none rather than failing the whole map.
	if ps, err := tasks.ParseParts(p.PartsResumed); err == nil && ps != nil {
		body.Resumed = ps
	}
	if ps, err := tasks.ParseParts(p.PartsActive); err == nil && ps != nil && p.State == tasks.StateActive {
		body.InFlight = ps
	}
	writeJSON(w, http.StatusOK, body)
}

var docParts = operationDoc{id: "getTransferParts", summary: "The parts map of a multipart transfer: parts done (from its checkpoint), resumed from an earlier attempt, in flight",
	params:    []paramDoc{idParam},
	responses: []responseDoc{{status: 200, desc: "the parts", schema: reflect.TypeFor[partsBody]()}, {status: 404, desc: "unknown id"}, unavailable}}
