package tasks

import (
	"strconv"
	"strings"
)

// MigrateReport is the result of a migration: the worker stores it as the
// task's result (asynq's ResultWriter) when the migration ends, completed or
// failed with some objects failed. Failures names each failed key (up to
// 1,000) with its reason.
type MigrateReport struct {
	Source    string            `json:"source"`
	Dest      string            `json:"dest"`
	DryRun    bool              `json:"dry_run,omitempty"`
	Listed    int64             `json:"listed"`
	Copied    int64             `json:"copied"`
	Skipped   int64             `json:"skipped"`
	Failed    int64             `json:"failed"`
	Bytes     int64             `json:"bytes"`
	Deleted   int64             `json:"deleted"`
	WouldCopy int64             `json:"would_copy,omitempty"`
	Failures  map[string]string `json:"failures,omitempty"`
	// Sample lists keys a dry run would copy (at most 1000).
	Sample []string `json:"sample,omitempty"`
	// WouldDelete counts the destination objects a dry run with
	// --delete-extra would delete; DeleteSample lists them (at most 1000).
	WouldDelete  int64    `json:"would_delete,omitempty"`
	DeleteSample []string `json:"delete_sample,omitempty"`
	// KeptRecent counts destination objects missing at the source that
	// --delete-extra kept because they were modified after the migration
	// started.
	KeptRecent int64 `json:"kept_recent,omitempty"`
	// KeptChanged counts extras not deleted because they changed at the
	// destination (another ETag, or gone) between the listings that found
	// them and their deletion.
	KeptChanged int64 `json:"kept_changed,omitempty"`
	// DeleteSkipped says why --delete-extra did not run.
	DeleteSkipped string `json:"delete_skipped,omitempty"`
	// Ignored counts, by reason, the entries of a local tree passed over
	// (symlinks, FIFOs, sockets, devices, names that are not UTF-8): never
	// followed or read, not failures. IgnoredSample names the first of
	// them (at most 1000), relative key → reason.
	Ignored       map[string]int64  `json:"ignored,omitempty"`
	IgnoredSample map[string]string `json:"ignored_sample,omitempty"`
}

// MigrateCommand is the `ferry migrate` command line that enqueues p again
// in queue, quoted for a POSIX shell: what to run to retry a migration's
// failures. A re-run decides from both listings as they are then, so it
// copies only what failed or changed since (and what is new); identical
// objects cost it no write. The webhook (notify) is left out: add
// --notify to be told again.
func MigrateCommand(p MigratePayload, queue string) string {
	args := []string{"ferry", "migrate", p.Source.String(), p.Dest.String()}
	if p.Source.Kind() == KindS3 && ProfileName(p.Source.Profile) != DefaultProfile {
		args = append(args, "--src-profile", p.Source.Profile)
	}
	if ProfileName(p.Dest.Profile) != DefaultProfile {
		args = append(args, "--dst-profile", p.Dest.Profile)
	}
	for _, g := range p.Include {
		args = append(args, "--include", g)
	}
	for _, g := range p.Exclude {
		args = append(args, "--exclude", g)
	}
	if p.DeleteExtra {
		args = append(args, "--delete-extra")
	}
	if p.DryRun {
		args = append(args, "--dry-run")
	}
	if p.CheckHeaders {
		args = append(args, "--check-headers")
	}
	if p.Window > 0 {
		args = append(args, "--window", strconv.Itoa(p.Window))
	}
	if p.PartSize > 0 {
		args = append(args, "--part-size", strconv.FormatInt(p.PartSize, 10))
	}
	if p.PartConcurrency > 0 {
		args = append(args, "--part-concurrency", strconv.Itoa(p.PartConcurrency))
	}
	if queue != "" && queue != "default" {
		args = append(args, "--queue", queue)
	}
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	return strings.Join(args, " ")
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// characters that are safe unquoted.
func shellQuote(s string) string {
	safe := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_./:@%+=,-", r))
	}) < 0
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
