package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/tasks"
)

// putSummary is what `ferry put FILE... DIR/ --wait` prints at the end
// (--json: as a JSON line): the files done and failed over every task.
type putSummary struct {
	Files    int                  `json:"files"`
	Done     int                  `json:"done"`
	Failed   int                  `json:"failed"`
	NotRun   int                  `json:"not_run,omitempty"`
	Bytes    int64                `json:"bytes"`
	Failures []tasks.BatchFailure `json:"failures,omitempty"`
}

// putMany enqueues files into the directory dstArg under their base names:
// ferry:batch tasks for the small ones (tasks.Client.EnqueueBatch), a put
// task each for files of tasks.MaxBatchObjectSize or more, which the worker
// uploads in resumable parts. Everything is checked before anything is
// enqueued.
func (a *app) putMany(ctx context.Context, f *enqueueFlags, files []string, dstArg string) error {
	if f.taskID != "" || f.idempotent {
		return usageErrorf("--task-id and --idempotent name one task, and several files are enqueued as batches with ids of their own: drop the flag")
	}
	if f.notify != "" {
		return usageErrorf("--notify applies to one transfer; several files are enqueued as batches, which send no webhook: put them one at a time, or follow the batches with --wait")
	}
	dir, err := a.parseS3("destination", dstArg, f.dstProf())
	if err != nil {
		return err
	}
	if dir.Key != "" && !strings.HasSuffix(dir.Key, "/") {
		return usageErrorf("with several files the destination is a directory: end it with '/' (%s/)", dstArg)
	}
	md, err := f.metadata()
	if err != nil {
		return err
	}
	opts, err := f.options()
	if err != nil {
		return err
	}
	var small, large []tasks.BatchItem
	seen := map[string]string{}
	for _, arg := range files {
		src, err := a.parseSource(arg, f.srcProf(), f.noLocalStat, false)
		if err != nil {
			return err
		}
		if src.loc.Kind() != tasks.KindFile {
			return usageErrorf("%s: with several sources each must be a local file: put other sources one at a time", arg)
		}
		dst := dir
		dst.Key = dir.Key + filepath.Base(src.loc.Path)
		if prev, ok := seen[dst.Key]; ok {
			return usageErrorf("%s and %s would both be %s: put them into different directories", prev, arg, dst.String())
		}
		seen[dst.Key] = arg
		it := tasks.BatchItem{Source: src.loc, Dest: dst, Size: src.size, ContentType: f.contentType, Metadata: md}
		if src.size >= tasks.MaxBatchObjectSize {
			large = append(large, it)
			continue
		}
		if err := it.Validate(); err != nil {
			return &usageError{fmt.Errorf("%s: %w", arg, err)}
		}
		small = append(small, it)
	}
	// Build every task before enqueueing any.
	var singles []*asynq.Task
	for _, it := range large {
		task, err := tasks.NewPutTask(tasks.PutPayload{Source: it.Source, Dest: it.Dest, ContentType: it.ContentType, Metadata: it.Metadata},
			sizedTimeout(f, it.Size)...)
		if err != nil {
			return &usageError{fmt.Errorf("%s: %w", it.Source.Path, err)}
		}
		singles = append(singles, task)
	}
	tc, closeFn, err := a.tasksClient(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	var infos []*asynq.TaskInfo
	if len(small) > 0 {
		infos, err = tc.EnqueueBatch(ctx, small, f.batchConcurrency, opts...)
	}
	for i := 0; err == nil && i < len(singles); i++ {
		var info *asynq.TaskInfo
		if info, err = tc.Enqueue(ctx, singles[i], opts...); err == nil {
			infos = append(infos, info)
		}
	}
	if perr := a.printEnqueued(f, infos, len(small), len(large)); perr != nil {
		return perr
	}
	if err != nil {
		if errors.Is(err, tasks.ErrSameObject) {
			return &usageError{err}
		}
		return fmt.Errorf("%w (the tasks listed above were enqueued)", err)
	}
	if !f.wait {
		return nil
	}
	final, err := follow(ctx, tc, idsOf(infos), a.renderer(f.json))
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintf(a.stderr, "ferry: stopped waiting; the tasks go on: `ferry status ID`, `ferry cancel ID`\n")
			return errInterrupted
		}
		return err
	}
	sum := putSummary{Files: len(small) + len(large)}
	for _, info := range infos {
		st, err := a.status(ctx, tc, info.ID, final[info.ID])
		if err != nil {
			return err
		}
		sum.add(info, st)
	}
	if f.json {
		if err := writeJSON(a.stdout, sum); err != nil {
			return err
		}
	} else {
		sum.print(a)
	}
	return failedError(final)
}

// printEnqueued prints what putMany enqueued: one line, then the ids (with
// --json: one enqueueResult line per task).
func (a *app) printEnqueued(f *enqueueFlags, infos []*asynq.TaskInfo, small, large int) error {
	if f.json {
		for _, info := range infos {
			if err := writeJSON(a.stdout, enqueueResult{TaskID: info.ID, Type: info.Type, Queue: info.Queue}); err != nil {
				return err
			}
		}
		return nil
	}
	batches := 0
	for _, info := range infos {
		if info.Type == tasks.TypeBatch {
			batches++
		}
	}
	fmt.Fprintf(a.stdout, "enqueued %d files in %d %s tasks", small, batches, tasks.TypeBatch)
	if large > 0 {
		fmt.Fprintf(a.stdout, " and %d files of %d MiB or more as %s tasks of their own", large, tasks.MaxBatchObjectSize>>20, tasks.TypePut)
	}
	if len(infos) > 0 {
		fmt.Fprintf(a.stdout, " on queue %s", infos[0].Queue)
	}
	fmt.Fprintln(a.stdout, ":")
	for _, info := range infos {
		fmt.Fprintf(a.stdout, "  %s %s\n", info.Type, info.ID)
	}
	if !f.wait && len(infos) > 0 {
		fmt.Fprintf(a.stdout, "follow them with: ferry watch %s\n", strings.Join(idsOf(infos), " "))
	}
	return nil
}

func idsOf(infos []*asynq.TaskInfo) []string {
	ids := make([]string, len(infos))
	for i, info := range infos {
		ids[i] = info.ID
	}
	return ids
}

// add counts one finished task: a batch by its result, a put as one file.
func (s *putSummary) add(info *asynq.TaskInfo, st statusOutput) {
	if info.Type != tasks.TypeBatch {
		if st.State == tasks.StateCompleted {
			s.Done++
			s.Bytes += st.BytesDone
			return
		}
		s.Failed++
		if len(s.Failures) < tasks.MaxBatchFailures {
			s.Failures = append(s.Failures, tasks.BatchFailure{Dest: st.Dest, Reason: cmp.Or(st.Error, string(st.State))})
		}
		return
	}
	var r tasks.BatchResult
	if len(st.Result) == 0 || json.Unmarshal(st.Result, &r) != nil {
		// No result (a batch archived before it ran, or one whose record
		// expired): count its files as failed with the task's error.
		var p tasks.BatchPayload
		_ = json.Unmarshal(info.Payload, &p)
		s.Failed += len(p.Items)
		if len(s.Failures) < tasks.MaxBatchFailures {
			s.Failures = append(s.Failures, tasks.BatchFailure{Dest: st.Dest, Reason: fmt.Sprintf("batch %s %s: %s", info.ID, st.State, cmp.Or(st.Error, "no result"))})
		}
		return
	}
	s.Done += r.Done
	s.Failed += r.Failed
	s.NotRun += r.NotRun
	s.Bytes += r.Bytes
	for _, fl := range r.Failures {
		if len(s.Failures) < tasks.MaxBatchFailures {
			s.Failures = append(s.Failures, fl)
		}
	}
}

func (s *putSummary) print(a *app) {
	fmt.Fprintf(a.stdout, "%d files: %d done (%s), %d failed", s.Files, s.Done, formatBytes(s.Bytes), s.Failed)
	if s.NotRun > 0 {
		fmt.Fprintf(a.stdout, ", %d not run (cancelled)", s.NotRun)
	}
	fmt.Fprintln(a.stdout)
	for _, fl := range s.Failures {
		fmt.Fprintf(a.stdout, "  failed %s: %s\n", fl.Dest, fl.Reason)
	}
	if s.Failed > len(s.Failures) {
		fmt.Fprintf(a.stdout, "  (%d more failures: see `ferry status ID` of each batch)\n", s.Failed-len(s.Failures))
	}
}
