package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/webhook"
)

// enqueueFlags are the flags every enqueue command shares.
type enqueueFlags struct {
	profile, srcProfile, dstProfile string
	queue                           string
	taskID                          string
	idempotent                      bool
	timeout                         time.Duration
	maxRetry                        int
	wait, json                      bool
	notify                          string

	// put and upload
	contentType string
	meta        []string
	noLocalStat bool
	// put of several files
	batchConcurrency int
	// upload, copy, move
	partSize        int64
	partConcurrency int
	// delete
	recursive, allowAll bool
	// delete and migrate: the task previews, and --wait prints what it
	// would delete (and copy).
	dryRun bool
}

func (f *enqueueFlags) register(fs *pflag.FlagSet, twoEnds bool) {
	fs.StringVar(&f.profile, "profile", "", "S3 profile of s3:// locations (default \"default\")")
	if twoEnds {
		fs.StringVar(&f.srcProfile, "src-profile", "", "S3 profile of the source (overrides --profile)")
		fs.StringVar(&f.dstProfile, "dst-profile", "", "S3 profile of the destination (overrides --profile)")
	}
	fs.StringVar(&f.queue, "queue", "default", "queue to enqueue on (a worker serves it with --queues)")
	fs.StringVar(&f.taskID, "task-id", "", "task id to use (default: a random id; see --idempotent)")
	fs.BoolVar(&f.idempotent, "idempotent", false, "use a deterministic task id derived from type, source and destination, so enqueueing the same transfer twice is refused while the first is kept (24h)")
	fs.Var((*duration)(&f.timeout), "timeout", "time limit of one run of the task, e.g. 30m (default: sized from the object, at least 10m)")
	fs.IntVar(&f.maxRetry, "max-retry", 0, "retries before the task is archived as failed (default 25 for transfers, 10 for put and delete)")
	fs.BoolVar(&f.wait, "wait", false, "wait for the task to finish, showing its progress; exit 0 on success, 3 on failure or cancel")
	fs.BoolVar(&f.json, "json", false, `print {"task_id","type","queue"} as JSON; with --wait, then the final status as a second JSON line`)
	fs.StringVar(&f.notify, "notify", "", "URL the worker POSTs a signed event to when the transfer ends (its host must be on the workers' webhook_allow; see docs/api.md Webhooks)")
}

// notifyOf is the payload's Notify from --notify; nil when not given.
func (f *enqueueFlags) notifyOf() *tasks.Notify {
	if f.notify == "" {
		return nil
	}
	return &tasks.Notify{URL: f.notify}
}

func (f *enqueueFlags) registerObjectAttrs(fs *pflag.FlagSet) {
	fs.StringVar(&f.contentType, "content-type", "", "Content-Type of the object (default: chosen by the worker)")
	fs.StringArrayVar(&f.meta, "meta", nil, "user metadata key=value (repeatable; keys lowercase a-z, 0-9, '-')")
	fs.BoolVar(&f.noLocalStat, "skip-local-check", false, "the local source path is on the worker's machine: do not check it here")
}

func (f *enqueueFlags) registerParts(fs *pflag.FlagSet) {
	fs.Var((*size)(&f.partSize), "part-size", "multipart part size, e.g. 16MiB (5MiB to 5GiB; default: the worker's)")
	fs.IntVar(&f.partConcurrency, "part-concurrency", 0, "parts in flight at once, 1 to 64 (default: the worker's)")
}

func (f *enqueueFlags) srcProf() string { return cmp.Or(f.srcProfile, f.profile) }
func (f *enqueueFlags) dstProf() string { return cmp.Or(f.dstProfile, f.profile) }

func (f *enqueueFlags) metadata() (map[string]string, error) {
	if len(f.meta) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(f.meta))
	for _, kv := range f.meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErrorf("invalid --meta %q: write key=value", kv)
		}
		m[k] = v
	}
	return m, nil
}

// source is a parsed source location and what the CLI learned about it.
type source struct {
	loc  tasks.Location
	size int64 // of a local file; 0 when unknown
}

// parseSource parses a SRC argument. Local files are checked here (unless
// skipStat): a missing file is reported before anything is enqueued.
func (a *app) parseSource(arg, profile string, skipStat, allowStdin bool) (source, error) {
	if arg == "-" {
		if !allowStdin {
			return source{}, usageErrorf("source \"-\" (stdin) works with put only, for at most %d bytes", tasks.MaxInlineSize)
		}
		data, err := io.ReadAll(io.LimitReader(a.stdin, tasks.MaxInlineSize+1))
		if err != nil {
			return source{}, fmt.Errorf("read stdin: %w", err)
		}
		if len(data) > tasks.MaxInlineSize {
			return source{}, usageErrorf("stdin holds more than %d bytes: write it to a file and upload the file", tasks.MaxInlineSize)
		}
		return source{loc: tasks.Location{Data: data}, size: int64(len(data))}, nil
	}
	loc, err := tasks.ParseLocation(arg, profile)
	if err != nil {
		return source{}, &usageError{err}
	}
	if err := a.checkLocationProfile(loc); err != nil {
		return source{}, err
	}
	src := source{loc: loc}
	if loc.Kind() == tasks.KindFile && !skipStat {
		fi, err := os.Stat(loc.Path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return source{}, fmt.Errorf("local file %s does not exist: check the path (if it exists on the worker's machine only, pass --skip-local-check)", loc.Path)
		case err != nil:
			return source{}, fmt.Errorf("local file %s: %w", loc.Path, err)
		case !fi.Mode().IsRegular():
			return source{}, fmt.Errorf("local file %s is not a regular file (%s): give a file", loc.Path, fi.Mode().Type())
		}
		src.size = fi.Size()
	}
	return src, nil
}

// parseObjectArgs parses the SRC and DST of a put or an upload of one
// object, and the object's --meta.
func (a *app) parseObjectArgs(f *enqueueFlags, srcArg, dstArg string, allowStdin bool) (source, tasks.Location, map[string]string, error) {
	src, err := a.parseSource(srcArg, f.srcProf(), f.noLocalStat, allowStdin)
	if err != nil {
		return source{}, tasks.Location{}, nil, err
	}
	dst, err := a.parseS3("destination", dstArg, f.dstProf())
	if err != nil {
		return source{}, tasks.Location{}, nil, err
	}
	md, err := f.metadata()
	if err != nil {
		return source{}, tasks.Location{}, nil, err
	}
	return src, dst, md, nil
}

// parseS3 parses an s3:// argument.
func (a *app) parseS3(role, arg, profile string) (tasks.Location, error) {
	loc, err := tasks.ParseLocation(arg, profile)
	if err != nil {
		return loc, &usageError{err}
	}
	if loc.Kind() != tasks.KindS3 {
		return loc, usageErrorf("%s %q must be an s3://bucket/key location", role, arg)
	}
	return loc, a.checkLocationProfile(loc)
}

func (a *app) checkLocationProfile(loc tasks.Location) error {
	if loc.Kind() != tasks.KindS3 {
		return nil
	}
	c, err := a.config()
	if err != nil {
		return err
	}
	return c.checkProfile(loc.Profile)
}

// enqueueResult is the --json output of an enqueue.
type enqueueResult struct {
	TaskID string `json:"task_id"`
	Type   string `json:"type"`
	Queue  string `json:"queue"`
}

// enqueue enqueues task with the options of f, prints it, and with --wait
// follows it to the end. src and dst make the --idempotent task id.
func (a *app) enqueue(ctx context.Context, f *enqueueFlags, task *asynq.Task, src, dst tasks.Location) error {
	opts, err := f.options()
	if err != nil {
		return err
	}
	id := f.taskID // "" lets asynq pick one
	switch {
	case f.taskID != "" && f.idempotent:
		return usageErrorf("--task-id and --idempotent both set the task id: pass one")
	case f.idempotent:
		id = tasks.TaskID(task.Type(), src, dst)
	}
	if id != "" {
		opts = append(opts, asynq.TaskID(id))
	}
	tc, closeFn, err := a.tasksClient(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	info, err := tc.Enqueue(ctx, task, opts...)
	if err != nil {
		if errors.Is(err, tasks.ErrSameObject) || errors.Is(err, tasks.ErrOverlap) || errors.Is(err, webhook.ErrRefused) {
			return &usageError{err}
		}
		if errors.Is(err, asynq.ErrTaskIDConflict) {
			return fmt.Errorf("a task with id %s exists already (the same transfer was enqueued within the retention period): see `ferry status %s`, or pass another --task-id", id, id)
		}
		return err
	}
	if f.json {
		if err := writeJSON(a.stdout, enqueueResult{TaskID: info.ID, Type: info.Type, Queue: info.Queue}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(a.stdout, "enqueued %s %s on queue %s\n", info.Type, info.ID, info.Queue)
		if !f.wait {
			fmt.Fprintf(a.stdout, "follow it with: ferry watch %s\n", info.ID)
		}
	}
	if !f.wait {
		return nil
	}
	r := a.renderer(f.json)
	final, err := follow(ctx, tc, []string{info.ID}, r)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintf(a.stderr, "ferry: stopped waiting; task %s goes on: `ferry status %s`, `ferry cancel %s`\n", info.ID, info.ID, info.ID)
			return errInterrupted
		}
		return err
	}
	if f.json || f.dryRun {
		st, err := a.status(ctx, tc, info.ID, final[info.ID])
		if err != nil {
			return err
		}
		if f.json {
			err = writeJSON(a.stdout, st)
		} else {
			err = printDryRun(a.stdout, st.Result)
		}
		if err != nil {
			return err
		}
	}
	return failedError(final)
}

// options are the enqueue options of --queue, --timeout and --max-retry.
func (f *enqueueFlags) options() ([]asynq.Option, error) {
	if f.queue == "" {
		return nil, usageErrorf("--queue is empty: give a queue name")
	}
	opts := []asynq.Option{asynq.Queue(f.queue)}
	if f.timeout > 0 {
		opts = append(opts, asynq.Timeout(f.timeout))
	}
	if f.maxRetry < 0 {
		return nil, usageErrorf("--max-retry %d is negative: use 0 or more", f.maxRetry)
	}
	if f.maxRetry > 0 {
		opts = append(opts, asynq.MaxRetry(f.maxRetry))
	}
	return opts, nil
}

// dryRunResult is what printDryRun reads of a dry run's result: the delete
// task's and the migration report's fields of the same names.
type dryRunResult struct {
	WouldCopy     int64    `json:"would_copy"`
	Sample        []string `json:"sample"`
	WouldDelete   int64    `json:"would_delete"`
	DeleteSample  []string `json:"delete_sample"`
	KeptRecent    int64    `json:"kept_recent"`
	DeleteSkipped string   `json:"delete_skipped"`
}

// printDryRun prints the keys a dry run would copy and delete, one a line.
func printDryRun(w io.Writer, result json.RawMessage) error {
	if len(result) == 0 {
		return nil
	}
	var r dryRunResult
	if err := json.Unmarshal(result, &r); err != nil {
		return fmt.Errorf("read the dry run's result: %w", err)
	}
	list := func(verb string, n int64, keys []string) {
		fmt.Fprintf(w, "dry run: would %s %d objects", verb, n)
		if int64(len(keys)) < n {
			fmt.Fprintf(w, " (the first %d listed)", len(keys))
		}
		fmt.Fprintln(w)
		for _, k := range keys {
			fmt.Fprintf(w, "  %s\n", k)
		}
	}
	if r.WouldCopy > 0 || len(r.Sample) > 0 {
		list("copy", r.WouldCopy, r.Sample)
	}
	list("delete", r.WouldDelete, r.DeleteSample)
	if r.KeptRecent > 0 {
		fmt.Fprintf(w, "dry run: %d objects missing at the source are kept: modified after the migration started\n", r.KeptRecent)
	}
	if r.DeleteSkipped != "" {
		fmt.Fprintf(w, "dry run: deletion skipped: %s\n", r.DeleteSkipped)
	}
	return nil
}

// sizedTimeout is a Timeout fitting a source of size bytes (for a put, whose
// payload has no size hint), unless --timeout is given.
func sizedTimeout(f *enqueueFlags, size int64) []asynq.Option {
	if f.timeout == 0 && size > 0 {
		return []asynq.Option{asynq.Timeout(tasks.TimeoutFor(size))}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func enqueueCommands(a *app) []*cobra.Command {
	return []*cobra.Command{putCmd(a), uploadCmd(a), copyCmd(a, false), copyCmd(a, true), deleteCmd(a), migrateCmd(a)}
}

func putCmd(a *app) *cobra.Command {
	f := &enqueueFlags{}
	cmd := &cobra.Command{
		Use:   "put SRC DST | put FILE... s3://bucket/dir/",
		Short: "Enqueue a put: one object from a file, an https URL, stdin or another object; or many files as batches",
		Long: `Enqueue a ferry:put task writing one object to DST (s3://bucket/key).

SRC is a local file (absolute or relative to the current directory; the worker
must be allowed to read it with --allow-dir), an https:// URL (its host must be
on the worker's --allow-url-host list), an s3://bucket/key object, or "-" for
stdin (at most 256 KiB, carried in the task itself). Large files are uploaded in
parts by the worker; use "ferry upload" to choose part size and concurrency.

With several files, or a destination ending in "/", each FILE goes to the
directory DST under its base name, and the files are enqueued as ferry:batch
tasks of up to 500 files or 64 MiB each (one task for many small objects)
instead of one task each. Files of 5 MiB or more get a put task of their own,
uploaded in resumable parts. --wait follows every task and prints the counts
of files done and failed, with the reasons of the first failures.`,
		Example: `  ferry put ./report.pdf s3://docs/2026/report.pdf --content-type application/pdf --meta owner=ops
  echo hello | ferry put - s3://docs/hello.txt --wait
  ferry put https://example.com/data.csv s3://raw/data.csv --json
  ferry put photos/*.jpg s3://media/photos/ --wait`,
		Args: args(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if last := argv[len(argv)-1]; len(argv) > 2 || strings.HasSuffix(last, "/") {
				return a.putMany(cmd.Context(), f, argv[:len(argv)-1], last)
			}
			src, dst, md, err := a.parseObjectArgs(f, argv[0], argv[1], true)
			if err != nil {
				return err
			}
			task, err := tasks.NewPutTask(tasks.PutPayload{Source: src.loc, Dest: dst, ContentType: f.contentType, Metadata: md, Notify: f.notifyOf()},
				sizedTimeout(f, src.size)...)
			if err != nil {
				return &usageError{err}
			}
			return a.enqueue(cmd.Context(), f, task, src.loc, dst)
		},
	}
	f.register(cmd.Flags(), true)
	f.registerObjectAttrs(cmd.Flags())
	cmd.Flags().IntVar(&f.batchConcurrency, "batch-concurrency", 0, "with several files: files of one batch in flight on the worker, 1 to 64 (default: the worker's batch_concurrency)")
	return cmd
}

func uploadCmd(a *app) *cobra.Command {
	f := &enqueueFlags{}
	cmd := &cobra.Command{
		Use:   "upload SRC DST",
		Short: "Enqueue a resumable multipart upload of a file, an https URL or an object",
		Long: `Enqueue a ferry:upload task: a multipart upload to DST (s3://bucket/key)
whose finished parts are checkpointed in Redis, so that it resumes on any worker
after a crash or a deploy.

SRC is a local file (absolute or relative; the worker must be allowed to read
it with --allow-dir), an https:// URL, or an s3://bucket/key object. The CLI
checks that a local file exists and passes its size, so the task's timeout
fits the file.`,
		Example: `  ferry upload /data/backup.tar s3://backups/backup.tar --part-size 64MiB --part-concurrency 8 --wait
  ferry upload ./disk.img s3://images/disk.img --dst-profile r2 --idempotent --json`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			src, dst, md, err := a.parseObjectArgs(f, argv[0], argv[1], false)
			if err != nil {
				return err
			}
			task, err := tasks.NewUploadTask(tasks.UploadPayload{Source: src.loc, Dest: dst, PartSize: f.partSize,
				PartConcurrency: f.partConcurrency, ContentType: f.contentType, Metadata: md, Size: src.size, Notify: f.notifyOf()})
			if err != nil {
				return &usageError{err}
			}
			return a.enqueue(cmd.Context(), f, task, src.loc, dst)
		},
	}
	f.register(cmd.Flags(), true)
	f.registerObjectAttrs(cmd.Flags())
	f.registerParts(cmd.Flags())
	return cmd
}

func copyCmd(a *app, move bool) *cobra.Command {
	f := &enqueueFlags{}
	use, short, long, example := "copy SRC DST", "Enqueue a copy of an object to another key, bucket or provider",
		`Enqueue a ferry:copy task copying the object SRC to DST (both s3://bucket/key).
The copy is server-side when both profiles share an endpoint, else streamed
through the worker in resumable parts.`,
		`  ferry copy s3://photos/a.jpg s3://archive/photos/a.jpg --wait
  ferry copy s3://src/big.bin s3://dst/big.bin --src-profile aws --dst-profile r2 --json`
	if move {
		use, short, long, example = "move SRC DST", "Enqueue a move: copy, verify at the destination, then delete the source",
			`Enqueue a ferry:move task: SRC is copied to DST (both s3://bucket/key), the copy
is verified (size and checksum), and only then is SRC deleted. A retry after a
crash never loses the object.`,
			`  ferry move s3://inbox/upload.bin s3://store/2026/upload.bin --wait
  ferry move s3://old/x s3://new/x --src-profile minio --dst-profile aws`
	}
	cmd := &cobra.Command{
		Use: use, Short: short, Long: long, Example: example,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			src, err := a.parseS3("source", argv[0], f.srcProf())
			if err != nil {
				return err
			}
			dst, err := a.parseS3("destination", argv[1], f.dstProf())
			if err != nil {
				return err
			}
			var task *asynq.Task
			if move {
				task, err = tasks.NewMoveTask(tasks.MovePayload{Source: src, Dest: dst, PartSize: f.partSize, PartConcurrency: f.partConcurrency, Notify: f.notifyOf()})
			} else {
				task, err = tasks.NewCopyTask(tasks.CopyPayload{Source: src, Dest: dst, PartSize: f.partSize, PartConcurrency: f.partConcurrency, Notify: f.notifyOf()})
			}
			if err != nil {
				return &usageError{err}
			}
			return a.enqueue(cmd.Context(), f, task, src, dst)
		},
	}
	f.register(cmd.Flags(), true)
	f.registerParts(cmd.Flags())
	return cmd
}

func deleteCmd(a *app) *cobra.Command {
	f := &enqueueFlags{}
	cmd := &cobra.Command{
		Use:   "delete DST",
		Short: "Enqueue the deletion of an object, or with --recursive of every object under a prefix",
		Long: `Enqueue a ferry:delete task. DST is s3://bucket/key; with --recursive it is a
directory and every object under it is deleted, in batches of 1000. Deleting a
missing object succeeds (deletes are idempotent). Emptying a whole bucket
(s3://bucket/ --recursive) also needs --allow-all.

A prefix is a directory: s3://logs/2024 means logs/2024/ and never touches
logs/2024-old/ or logs/2024.txt. To delete by raw prefix, end it with '*'
(quote it for the shell): 's3://logs/2024*' takes all three.

--dry-run (with --recursive) lists what would be deleted and deletes nothing;
with --wait it prints the keys.`,
		Example: `  ferry delete s3://tmp/old.bin --wait
  ferry delete s3://logs/2024 --recursive --dry-run --wait
  ferry delete s3://logs/2024 --recursive --wait
  ferry delete 's3://logs/2024-*' --recursive --wait
  ferry delete s3://scratch/ --recursive --allow-all`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			dst, err := a.parseS3("destination", argv[0], f.profile)
			if err != nil {
				return err
			}
			if f.recursive && tasks.DirPrefix(dst.Key) == "" && !f.allowAll {
				return usageErrorf("refusing to delete every object in bucket %q: give a prefix (s3://%s/prefix/), or pass --allow-all if you mean it", dst.Bucket, dst.Bucket)
			}
			if !f.recursive && (dst.Key == "" || strings.HasSuffix(dst.Key, "/") || strings.HasSuffix(dst.Key, "*")) {
				return usageErrorf("%s names a prefix, not an object: pass --recursive to delete every object under it (--dry-run first to see them)", argv[0])
			}
			if f.dryRun && !f.recursive {
				return usageErrorf("--dry-run previews a --recursive delete; to check one object use `ferry info %s`", argv[0])
			}
			task, err := tasks.NewDeleteTask(tasks.DeletePayload{Dest: dst, Recursive: f.recursive, AllowAll: f.allowAll && f.recursive, DryRun: f.dryRun, Notify: f.notifyOf()})
			if err != nil {
				return &usageError{err}
			}
			return a.enqueue(cmd.Context(), f, task, tasks.Location{}, dst)
		},
	}
	f.register(cmd.Flags(), false)
	cmd.Flags().BoolVar(&f.recursive, "recursive", false, "DST is a prefix: delete every object under it")
	cmd.Flags().BoolVar(&f.allowAll, "allow-all", false, "with --recursive and an empty prefix, empty the whole bucket")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "with --recursive: list what would be deleted, delete nothing")
	return cmd
}
