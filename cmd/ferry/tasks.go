package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/tasks"
)

// statusOutput is `ferry status --json`: the transfer object of the
// dashboard's API (dashboard.Transfer: the task's Progress, task_id included,
// plus percent and eta_seconds), plus asynq's view of the task (queue,
// retries, the result of a completed task).
type statusOutput struct {
	dashboard.Transfer
	Queue    string `json:"queue,omitempty"`
	Retried  int    `json:"retried"`
	MaxRetry int    `json:"max_retry"`
	// Result is what the worker wrote for a completed task (the stored
	// object), when it is JSON.
	Result json.RawMessage `json:"result,omitempty"`
	// Rerun is, for a migration, the command that runs it again: it copies
	// only what failed or changed since (and what is new).
	Rerun string `json:"rerun,omitempty"`
}

// status completes p, the progress of task id, with asynq's record of the
// task, when it still exists.
func (a *app) status(ctx context.Context, tc *tasks.Client, id string, p tasks.Progress) (statusOutput, error) {
	p.TaskID = id
	st := statusOutput{Transfer: dashboard.NewTransfer(p)}
	info, err := findTask(tc.Inspector(), id)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		return st, nil // only the progress is left
	case err != nil:
		return st, err
	}
	st.Queue, st.Retried, st.MaxRetry = info.Queue, info.Retried, info.MaxRetry
	if st.Type == "" {
		st.Type = info.Type
	}
	if len(info.Result) > 0 && json.Valid(info.Result) {
		st.Result = json.RawMessage(info.Result)
	}
	if info.Type == tasks.TypeMigrate {
		var mp tasks.MigratePayload
		if json.Unmarshal(info.Payload, &mp) == nil {
			st.Rerun = tasks.MigrateCommand(mp, info.Queue)
		}
	}
	return st, nil
}

// findTask looks id up in every queue.
func findTask(in *asynq.Inspector, id string) (*asynq.TaskInfo, error) {
	queues, err := in.Queues()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	for _, q := range queues {
		info, err := in.GetTaskInfo(q, id)
		switch {
		case err == nil:
			return info, nil
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		default:
			return nil, fmt.Errorf("look up task %s in queue %q: %w", id, q, err)
		}
	}
	return nil, tasks.ErrNotFound
}

func notFound(id string) error {
	return fmt.Errorf("task %s not found: check the id; finished tasks are kept for 24h", id)
}

func taskCommands(a *app) []*cobra.Command {
	return []*cobra.Command{statusCmd(a), watchCmd(a), cancelCmd(a)}
}

func statusCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show a task's state and progress",
		Long: `Show the state (pending, active, retrying, completed, failed, cancelled) and
progress of a task: bytes and parts done, rate, times, the last error, and from
the queue its retries and, once completed, its result.

A migration shows its objects listed, copied, skipped and failed, the bytes
copied, its byte and object rates and its ETA (once the source is listed);
once it ended, the failures from its report with their reasons and the
command that re-runs it (copying only what failed or changed since).`,
		Example: `  ferry status 6f1c0f3e-8a0e-4a53-9a39-0d3c6f5b2a11
  ferry status ferry-3a5e0c7d1b2f4e6a8c9d0e1f --json | jq .state`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			ctx, id := cmd.Context(), argv[0]
			tc, closeFn, err := a.tasksClient(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			p, err := tc.Progress(ctx, id)
			if errors.Is(err, tasks.ErrNotFound) {
				return notFound(id)
			}
			if err != nil {
				return err
			}
			st, err := a.status(ctx, tc, id, p)
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(a.stdout, st)
			}
			printStatus(a, st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the status as JSON")
	return cmd
}

func printStatus(a *app, st statusOutput) {
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%s:\t%s\n", k, v)
		}
	}
	row("ID", st.TaskID)
	row("Type", st.Type)
	row("State", string(st.State))
	row("Queue", st.Queue)
	row("Source", st.Source)
	row("Dest", st.Dest)
	prog := formatBytes(st.BytesDone)
	if st.BytesTotal > 0 {
		prog = fmt.Sprintf("%s / %s (%d%%)", formatBytes(st.BytesDone), formatBytes(st.BytesTotal), st.BytesDone*100/st.BytesTotal)
	}
	mig := isMigration(st.Transfer)
	if mig {
		row("Objects", migrationCounts(st.Transfer))
		prog = formatBytes(st.Counters["bytes"]) + " copied"
	}
	row("Progress", prog)
	if st.PartsTotal > 0 {
		row("Parts", fmt.Sprintf("%d / %d", st.PartsDone, st.PartsTotal))
	}
	if st.ResumedFrom > 0 {
		row("Resumed from", formatBytes(st.ResumedFrom))
	}
	if mig && st.State == tasks.StateActive {
		row("Rate", migrationRate(st.Transfer))
	} else if st.State == tasks.StateActive && st.Rate > 0 {
		r := formatBytes(int64(st.Rate)) + "/s"
		if e := eta(st.BytesDone, st.BytesTotal, st.Rate); e > 0 {
			r += ", ETA " + e.String()
		}
		row("Rate", r)
	}
	if !st.StartedAt.IsZero() {
		row("Started", st.StartedAt.Local().Format(time.DateTime))
	}
	if !st.UpdatedAt.IsZero() {
		row("Updated", st.UpdatedAt.Local().Format(time.DateTime))
	}
	if st.MaxRetry > 0 {
		row("Retried", fmt.Sprintf("%d of %d", st.Retried, st.MaxRetry))
	}
	row("Error", st.Error)
	rep := migrationReport(st.Result)
	switch {
	case mig && rep != nil:
		if rep.DeleteSkipped != "" {
			row("Delete extra", "skipped: "+rep.DeleteSkipped)
		}
	case len(st.Result) > 0:
		row("Result", string(st.Result))
	}
	_ = w.Flush()
	if mig && rep != nil && rep.Failed > 0 {
		fmt.Fprintf(a.stdout, "Failures (%d, from the migration's report):\n", rep.Failed)
		for _, l := range failureLines(rep, st.TaskID) {
			fmt.Fprintf(a.stdout, "  %s\n", l)
		}
	}
	if st.Rerun != "" && st.State.Terminal() {
		fmt.Fprintf(a.stdout, "Re-run: %s\n  (a re-run compares both sides again: it copies only what failed or changed since, and skips the rest)\n", st.Rerun)
	}
}

func watchCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "watch ID...",
		Short: "Follow tasks live until they end",
		Long: `Follow one or more tasks until each has completed, failed or been cancelled:
progress bars on a terminal, one line per change otherwise (at most one a
second per task), or with --json one JSON status line per update. A migration
gets a bar of objects decided out of objects listed, with its counts, bytes,
rates and ETA.
Exit code 0 when every task completed, 3 when any failed or was cancelled.
Interrupting watch does not stop the tasks.`,
		Example: `  ferry watch 6f1c0f3e-8a0e-4a53-9a39-0d3c6f5b2a11
  ferry watch $(ferry upload a.bin s3://b/a.bin --json | jq -r .task_id) $(ferry upload b.bin s3://b/b.bin --json | jq -r .task_id)`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, ids []string) error {
			ctx := cmd.Context()
			tc, closeFn, err := a.tasksClient(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			for _, id := range ids {
				if _, err := tc.Progress(ctx, id); errors.Is(err, tasks.ErrNotFound) {
					return notFound(id)
				} else if err != nil {
					return err
				}
			}
			var r renderer
			if jsonOut {
				r = jsonRenderer{a: a}
			} else {
				r = a.renderer(false)
			}
			final, err := follow(ctx, tc, ids, r)
			if errors.Is(err, context.Canceled) {
				fmt.Fprintln(a.stderr, "ferry: stopped watching; the tasks go on")
				return errInterrupted
			}
			if err != nil {
				return err
			}
			return failedError(final)
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print every update as a JSON line (the fields of status --json, without the queue's)")
	return cmd
}

// jsonRenderer prints each update as a JSON line.
type jsonRenderer struct{ a *app }

func (r jsonRenderer) update(p tasks.Progress) {
	_ = writeJSON(r.a.stdout, statusOutput{Transfer: dashboard.NewTransfer(p)})
}

func (jsonRenderer) close() {}

func cancelCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID...",
		Short: "Cancel tasks",
		Long: `Cancel tasks. A running task is stopped by its worker at once, whatever its
type (the request in flight is dropped; a batch lets its items in flight
finish), its multipart upload aborted, and it ends "cancelled" (not retried):
a move keeps its source, a delete deletes nothing more. A task not running
(pending, scheduled, waiting to retry) is archived at once and a worker aborts
the multipart upload an earlier run left. Cancelling a finished task is an
error.`,
		Example: `  ferry cancel 6f1c0f3e-8a0e-4a53-9a39-0d3c6f5b2a11`,
		Args:    args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, ids []string) error {
			ctx := cmd.Context()
			tc, closeFn, err := a.tasksClient(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			var errs []error
			for _, id := range ids {
				err := tc.Cancel(ctx, id)
				switch {
				case err == nil:
					fmt.Fprintf(a.stdout, "cancelled %s\n", id)
				case errors.Is(err, tasks.ErrNotFound):
					errs = append(errs, notFound(id))
				case errors.Is(err, tasks.ErrFinished):
					errs = append(errs, fmt.Errorf("task %s has already finished: nothing to cancel (%w)", id, err))
				default:
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		},
	}
}
