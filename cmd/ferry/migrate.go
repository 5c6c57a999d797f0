package main

import (
	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/tasks"
)

func migrateCmd(a *app) *cobra.Command {
	f := &enqueueFlags{}
	var p tasks.MigratePayload
	cmd := &cobra.Command{
		Use:   "migrate SRC_PREFIX DST_PREFIX",
		Short: "Enqueue a resumable bulk migration of every object under a prefix",
		Long: `Enqueue a ferry:migrate task: every object under SRC_PREFIX (s3://bucket/prefix/)
is copied to the same relative key under DST_PREFIX, across buckets or providers.

The migration lists the source page by page with its cursor checkpointed in
Redis, so a crashed migration continues where it stopped. It fans out one copy
task per object (deterministic ids: re-running enqueues nothing twice) through
a bounded window, so Redis memory stays flat for any number of objects.
Objects already identical at the destination are skipped: ferry records the
source ETag and size in each copy's metadata. Large objects between endpoints
are copied in checkpointed parts and resume mid-object.

Prefixes are directories: s3://a/photos means photos/ on both sides, never
photos-2019/ or photos.bak. To select by raw prefix, migrate the parent and
use a glob: s3://a/ s3://b/ --include 'photos*'. A glob matches a key or any
of its leading directories ('tmp' is everything under tmp/).

--dry-run lists what would be copied (and with --delete-extra deleted),
writing nothing; with --wait it prints the keys.
--delete-extra (sync) deletes destination objects missing at the source, only
after every copy succeeded and both complete listings passed their checks
(keys in order, no truncated page without a continuation token), and never
an object modified at the destination after the migration started.
The final report (counts, failures with reasons, why a deletion was skipped)
is the task's result: ferry status ID --json.`,
		Example: `  ferry migrate s3://old-bucket/ s3://new-bucket/ --src-profile aws --dst-profile r2 --wait
  ferry migrate s3://data/2025 s3://archive/2025 --dry-run --wait --json
  ferry migrate s3://a/photos s3://b/photos --delete-extra --dry-run --wait
  ferry migrate s3://src/logs/ s3://dst/logs/ --include '*/*.gz' --exclude tmp --delete-extra`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			src, err := a.parseS3("source prefix", argv[0], f.srcProf())
			if err != nil {
				return err
			}
			dst, err := a.parseS3("destination prefix", argv[1], f.dstProf())
			if err != nil {
				return err
			}
			p.Source, p.Dest, p.DryRun = src, dst, f.dryRun
			p.PartSize, p.PartConcurrency = f.partSize, f.partConcurrency
			task, err := tasks.NewMigrateTask(p)
			if err != nil {
				return &usageError{err}
			}
			return a.enqueue(cmd.Context(), f, task, src, dst)
		},
	}
	f.register(cmd.Flags(), true)
	f.registerParts(cmd.Flags())
	fl := cmd.Flags()
	fl.BoolVar(&f.dryRun, "dry-run", false, "list what would be copied, skipped and (with --delete-extra) deleted; write nothing")
	fl.BoolVar(&p.DeleteExtra, "delete-extra", false, "after every copy succeeded, delete destination objects missing at the source")
	fl.StringArrayVar(&p.Include, "include", nil, "only keys (relative to SRC_PREFIX) matching this glob, or under a directory matching it; repeatable; '**' matches any key")
	fl.StringArrayVar(&p.Exclude, "exclude", nil, "skip keys (relative to SRC_PREFIX) matching this glob, or under a directory matching it; repeatable")
	fl.IntVar(&p.Window, "window", 0, "copies of this migration pending at once (default 64): the per-migration concurrency cap")
	return cmd
}
