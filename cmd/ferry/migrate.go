package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/tasks"
)

func migrateCmd(a *app) *cobra.Command {
	f := &enqueueFlags{}
	var p tasks.MigratePayload
	cmd := &cobra.Command{
		Use:   "migrate SRC_PREFIX|DIR DST_PREFIX",
		Short: "Enqueue a resumable bulk migration of every object under a prefix, or of a local directory tree",
		Long: `Enqueue a ferry:migrate task: every object under SRC_PREFIX (s3://bucket/prefix/)
is copied to the same relative key under DST_PREFIX, across buckets or providers.

The source may instead be a local directory DIR on the worker's machine, under
one of its allowed directories (allow_dirs in the worker's config, or
ferry worker --allow-dir): every regular file of the tree is uploaded to
DST_PREFIX under its path relative to DIR (/data/photos/2024/a.jpg becomes
DST_PREFIX2024/a.jpg), with the same cursor, filters, dry run and
--delete-extra. Symlinks (to files or directories, inside or outside the
allowed directories), FIFOs, sockets and devices are never followed or read:
the report counts them by reason ("ignored"); a file or directory replaced by
a symlink after the walk fails as changed at the source, nothing is read
through it. DIR must not be, or lie under, a symlink below the allowed
directory. A file is identical at the destination when ferry recorded writing
it from the same size and mtime, or when its MD5 is the object's (single-part)
ETag; a re-run copies nothing else.
The CLI checks that DIR is a directory here (--skip-local-check when it exists
on the worker's machine only) and, when its config file lists allow_dirs, that
DIR is under one of them.

The migration lists the source page by page with its cursor checkpointed in
Redis once per page, so a crashed migration continues where it stopped. The
small objects (or files) of a page, below 5 MiB, are copied by ferry:batch
tasks of up to 100 objects, each of which records its finished objects and
resumes without copying them again; larger ones get a copy (or upload) task
each. At most --window of these tasks are pending at once, and each is
deleted once the migration has counted it, so Redis memory stays flat for
any number of objects.

An object is identical, and skipped, when the two listings show the same
size and ETag and the source not modified after the destination was
written (like aws s3 sync; no HEAD), or when the ETags differ but ferry's
record of the source ETag at the destination matches (one HEAD). So
re-running a finished migration only lists both sides. A change of headers
or metadata alone is seen at the source (its LastModified moves) but not at
the destination: --check-headers HEADs both sides of every object of the
same size and compares headers, user metadata and recorded CRC32Cs too.
A re-run decides from the destination as it is now, never from an earlier
run's tasks: afterwards the destination holds the source's bytes (and,
with --check-headers, its headers too). Large objects
between endpoints are copied in checkpointed parts and resume mid-object.

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
  ferry migrate /data/photos s3://bucket/photos/ --wait
  ferry migrate /data/photos s3://bucket/photos/ --exclude '*.tmp' --delete-extra --dry-run --wait
  ferry migrate s3://data/2025 s3://archive/2025 --dry-run --wait --json
  ferry migrate s3://a/photos s3://b/photos --delete-extra --dry-run --wait
  ferry migrate s3://src/logs/ s3://dst/logs/ --include '*/*.gz' --exclude tmp --delete-extra`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			src, err := a.migrateSource(argv[0], f)
			if err != nil {
				return err
			}
			dst, err := a.parseS3("destination prefix", argv[1], f.dstProf())
			if err != nil {
				return err
			}
			p.Source, p.Dest, p.DryRun = src, dst, f.dryRun
			p.PartSize, p.PartConcurrency, p.Notify = f.partSize, f.partConcurrency, f.notifyOf()
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
	fl.IntVar(&p.Window, "window", 0, "tasks of this migration (batches of up to 100 small objects, copies of large ones) pending at once (default 64)")
	fl.BoolVar(&p.CheckHeaders, "check-headers", false, "HEAD both sides of every object of the same size and compare headers, user metadata and CRC32Cs (2 HEADs per unchanged object); default: size, ETag and LastModified from the listings")
	fl.BoolVar(&f.noLocalStat, "skip-local-check", false, "the source directory is on the worker's machine: do not check it here")
	return cmd
}

// migrateSource parses a migration's source: an s3:// prefix, or a local
// directory, which must be one here (unless --skip-local-check) and, when
// the config file lists the worker's allow_dirs, under one of them.
func (a *app) migrateSource(arg string, f *enqueueFlags) (tasks.Location, error) {
	loc, err := tasks.ParseLocation(arg, f.srcProf())
	if err != nil {
		return loc, &usageError{err}
	}
	switch loc.Kind() {
	case tasks.KindS3:
		if f.noLocalStat {
			return loc, usageErrorf("--skip-local-check applies to a local source directory, not %s", arg)
		}
		return loc, a.checkLocationProfile(loc)
	case tasks.KindFile:
	default:
		return loc, usageErrorf("source %q must be an s3://bucket/prefix or a local directory", arg)
	}
	if f.srcProfile != "" {
		return loc, usageErrorf("--src-profile names the profile of an s3:// source; %s is a local directory", loc.Path)
	}
	if !f.noLocalStat {
		fi, err := os.Stat(loc.Path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return loc, usageErrorf("local directory %s does not exist: check the path (if it exists on the worker's machine only, pass --skip-local-check)", loc.Path)
		case err != nil:
			return loc, fmt.Errorf("local directory %s: %w", loc.Path, err)
		case !fi.IsDir():
			return loc, usageErrorf("%s is not a directory: migrate a directory, or put one file with ferry put", loc.Path)
		}
	}
	cfg, err := a.config()
	if err != nil {
		return loc, err
	}
	if dirs := cfg.Worker.AllowDirs; len(dirs) > 0 && !underAny(loc.Path, dirs) {
		return loc, usageErrorf("%s is not under the worker's allowed directories (%s) in %s: add it (or a parent) to worker.allow_dirs there, or to the worker's --allow-dir, and restart the worker",
			loc.Path, strings.Join(dirs, ", "), cfg.File)
	}
	return loc, nil
}

// underAny reports whether path is one of dirs or inside one.
func underAny(path string, dirs []string) bool {
	for _, d := range dirs {
		rel, err := filepath.Rel(d, path)
		if err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return true
		}
	}
	return false
}
