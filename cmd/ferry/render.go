package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/tasks"
)

// renderer shows progress updates as they come.
type renderer interface {
	update(p tasks.Progress)
	// close is called once, after the last update (or on interrupt).
	close()
}

// renderer picks bars on a terminal, plain lines otherwise, and nothing for
// --json (whose output is the final status).
func (a *app) renderer(jsonOut bool) renderer {
	switch {
	case jsonOut:
		return nopRenderer{}
	case a.stdoutTTY:
		return newBarRenderer(a.stdout)
	}
	return newLineRenderer(a.stdout)
}

// follow streams the progress of ids into r until every one is terminal, and
// returns the last progress of each. Besides the pub/sub stream it polls
// every few seconds, so a task that ends without a final update (a worker
// killed for good, a payload it refused) is still seen ending. It returns
// ctx's error when interrupted.
func follow(ctx context.Context, tc *tasks.Client, ids []string, r renderer) (map[string]tasks.Progress, error) {
	defer r.close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := tc.Watch(wctx, ids...)
	if err != nil {
		return nil, err
	}
	last := make(map[string]tasks.Progress, len(ids))
	accept := func(p tasks.Progress) {
		old, seen := last[p.TaskID]
		switch {
		case !seen:
		case old.State.Terminal():
			return
		case p.State.Terminal():
		case p.UpdatedAt.Before(old.UpdatedAt):
			return
		}
		last[p.TaskID] = p
		r.update(p)
	}
	finished := func() bool {
		for _, id := range ids {
			if p, ok := last[id]; !ok || !p.State.Terminal() {
				return false
			}
		}
		return true
	}
	poll := time.NewTicker(2 * time.Second)
	defer poll.Stop()
	for !finished() {
		select {
		case p, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return last, ctx.Err()
				}
				ch = nil // closed: every task ended; finished() agrees
				continue
			}
			accept(p)
		case <-poll.C:
			for _, id := range ids {
				if p, ok := last[id]; ok && p.State.Terminal() {
					continue
				}
				p, err := tc.Progress(ctx, id)
				if err == nil {
					accept(p)
				}
			}
		case <-ctx.Done():
			return last, ctx.Err()
		}
	}
	return last, nil
}

// failedError is a taskFailedError naming the tasks that did not complete.
// It is partial when each of them is a migration that ran to its end with
// some objects failed (listed in its report; a re-run retries only those).
func failedError(final map[string]tasks.Progress) error {
	var msgs []string
	partial := true
	for _, p := range final {
		switch p.State {
		case tasks.StateFailed, tasks.StateCancelled:
			msgs = append(msgs, fmt.Sprintf("task %s %s: %s", p.TaskID, p.State, cmp.Or(p.Error, "no error recorded")))
			if p.State == tasks.StateCancelled || p.Type != tasks.TypeMigrate || p.Counters["failed"] == 0 {
				partial = false
			}
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return &taskFailedError{msg: strings.Join(msgs, "\nferry: "), partial: partial}
}

type nopRenderer struct{}

func (nopRenderer) update(tasks.Progress) {}
func (nopRenderer) close()                {}

// lineRenderer prints one line per change of state or part, and otherwise at
// most one per task a second.
type lineRenderer struct {
	w       io.Writer
	printed map[string]lineState
}

type lineState struct {
	at    time.Time
	state tasks.State
	parts int
}

func newLineRenderer(w io.Writer) *lineRenderer {
	return &lineRenderer{w: w, printed: map[string]lineState{}}
}

func (r *lineRenderer) update(p tasks.Progress) {
	old, seen := r.printed[p.TaskID]
	now := time.Now()
	if seen && old.state == p.State && old.parts == p.PartsDone && now.Sub(old.at) < time.Second {
		return
	}
	r.printed[p.TaskID] = lineState{at: now, state: p.State, parts: p.PartsDone}
	fmt.Fprintln(r.w, progressLine(p))
}

func (r *lineRenderer) close() {}

// progressLine is one plain line about p.
func progressLine(p tasks.Progress) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", p.TaskID, p.State)
	if t := dashboard.NewTransfer(p); isMigration(t) {
		fmt.Fprintf(&b, " %s", migrationLine(t))
		if p.Error != "" && p.State != tasks.StateCompleted {
			fmt.Fprintf(&b, ": %s", p.Error)
		}
		return b.String()
	}
	switch p.State {
	case tasks.StateFailed, tasks.StateCancelled, tasks.StateRetrying:
		if p.Error != "" {
			fmt.Fprintf(&b, ": %s", p.Error)
		}
		return b.String()
	}
	if p.BytesTotal > 0 {
		fmt.Fprintf(&b, " %s/%s %d%%", formatBytes(p.BytesDone), formatBytes(p.BytesTotal), p.BytesDone*100/p.BytesTotal)
	} else if p.BytesDone > 0 {
		fmt.Fprintf(&b, " %s", formatBytes(p.BytesDone))
	}
	if p.PartsTotal > 0 {
		fmt.Fprintf(&b, " parts %d/%d", p.PartsDone, p.PartsTotal)
	}
	if p.State == tasks.StateActive {
		if p.Rate > 0 {
			fmt.Fprintf(&b, " %s/s", formatBytes(int64(p.Rate)))
		}
		if e := eta(p.BytesDone, p.BytesTotal, p.Rate); e > 0 {
			fmt.Fprintf(&b, " eta %s", e)
		}
	}
	if p.State == tasks.StateCompleted && !p.StartedAt.IsZero() && p.UpdatedAt.After(p.StartedAt) {
		fmt.Fprintf(&b, " in %s", p.UpdatedAt.Sub(p.StartedAt).Round(time.Millisecond))
	}
	return b.String()
}

// barRenderer draws one mpb bar per task: bytes, percent, rate, ETA, parts.
type barRenderer struct {
	p    *mpb.Progress
	mu   sync.Mutex // guards last, read by the decorators on mpb's goroutine
	last map[string]tasks.Progress
	bars map[string]*mpb.Bar
}

func newBarRenderer(w io.Writer) *barRenderer {
	return &barRenderer{
		p:    mpb.New(mpb.WithOutput(w), mpb.WithWidth(32), mpb.WithRefreshRate(200*time.Millisecond)),
		last: map[string]tasks.Progress{},
		bars: map[string]*mpb.Bar{},
	}
}

func (r *barRenderer) get(id string) tasks.Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[id]
}

func (r *barRenderer) update(p tasks.Progress) {
	r.mu.Lock()
	r.last[p.TaskID] = p
	r.mu.Unlock()
	bar, ok := r.bars[p.TaskID]
	if !ok {
		id := p.TaskID
		name := shortID(id)
		if p.Dest != "" {
			name += " → " + p.Dest
		}
		bar = r.p.New(0, mpb.BarStyle().Lbound("[").Rbound("]"),
			mpb.PrependDecorators(
				decor.Name(name, decor.WC{C: decor.DindentRight | decor.DextraSpace}),
				decor.Any(func(decor.Statistics) string { return string(r.get(id).State) }, decor.WCSyncSpaceR),
			),
			mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return barStats(r.get(id)) })),
		)
		r.bars[id] = bar
	}
	if t := dashboard.NewTransfer(p); isMigration(t) {
		// A bar per migration: objects decided out of objects listed (the
		// total grows until the source is listed to its end).
		if l := t.Counters["listed"]; l > 0 {
			bar.SetTotal(l, false)
		}
		bar.SetCurrent(dashboard.DecidedObjects(t.Counters))
	} else {
		if p.BytesTotal > 0 {
			bar.SetTotal(p.BytesTotal, false)
		}
		bar.SetCurrent(p.BytesDone)
	}
	switch p.State {
	case tasks.StateCompleted:
		bar.SetTotal(-1, true)
	case tasks.StateFailed, tasks.StateCancelled:
		bar.Abort(false)
	}
}

func (r *barRenderer) close() {
	for _, b := range r.bars {
		b.Abort(false) // no-op on completed bars; ends the others
	}
	r.p.Wait()
}

// barStats is the text after a bar.
func barStats(p tasks.Progress) string {
	var b strings.Builder
	if t := dashboard.NewTransfer(p); isMigration(t) {
		b.WriteString(migrationLine(t))
		if p.Error != "" && p.State != tasks.StateCompleted {
			fmt.Fprintf(&b, "  %s", p.Error)
		}
		return b.String()
	}
	if p.BytesTotal > 0 {
		fmt.Fprintf(&b, "%s / %s %3d%%", formatBytes(p.BytesDone), formatBytes(p.BytesTotal), p.BytesDone*100/p.BytesTotal)
	} else {
		b.WriteString(formatBytes(p.BytesDone))
	}
	if p.State == tasks.StateActive {
		if p.Rate > 0 {
			fmt.Fprintf(&b, "  %s/s", formatBytes(int64(p.Rate)))
		}
		if e := eta(p.BytesDone, p.BytesTotal, p.Rate); e > 0 {
			fmt.Fprintf(&b, "  ETA %s", e)
		}
	}
	if p.PartsTotal > 0 {
		fmt.Fprintf(&b, "  parts %d/%d", p.PartsDone, p.PartsTotal)
	}
	if p.Error != "" && p.State != tasks.StateCompleted {
		fmt.Fprintf(&b, "  %s", p.Error)
	}
	return b.String()
}

// shortID shortens a long random id for a bar's label.
func shortID(id string) string {
	if len(id) > 14 {
		return id[:14] + "…"
	}
	return id
}
