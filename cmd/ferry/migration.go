package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/tasks"
)

// A migration's progress in words, for status and watch: its counters
// (listed, copied, skipped, failed...), the bytes copied, its rates and
// its ETA, all from the migration's own counters (dashboard.NewTransfer
// derives the rates and ETA, as on the dashboard).

// isMigration reports whether t is a migration with counters to show.
func isMigration(t dashboard.Transfer) bool {
	return t.Type == tasks.TypeMigrate && t.Counters != nil
}

// migrationCounts is "120 listed · 100 copied · 15 skipped · 2 failed",
// with what else is not zero (filtered, ignored, in flight, would copy,
// deleted) and "listing…" until the source is listed to its end.
func migrationCounts(t dashboard.Transfer) string {
	c := t.Counters
	parts := []string{fmt.Sprintf("%d listed", c["listed"]), fmt.Sprintf("%d copied", c["copied"]),
		fmt.Sprintf("%d skipped", c["skipped"]), fmt.Sprintf("%d failed", c["failed"])}
	for _, k := range []struct{ key, label string }{
		{"would_copy", "would copy"}, {"filtered", "filtered"}, {"ignored", "ignored"}, {"deleted", "deleted"}, {"pending", "in flight"},
	} {
		if c[k.key] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c[k.key], k.label))
		}
	}
	s := strings.Join(parts, " · ")
	if !t.State.Terminal() && c["listing_done"] != 1 {
		s += " · listing…"
	}
	return s
}

// migrationRate is "3.2 MiB/s · 40.0 objects/s · ETA 1m05s" for a running
// migration; the ETA is known once the source is listed to its end.
func migrationRate(t dashboard.Transfer) string {
	var parts []string
	if t.Rate > 0 {
		parts = append(parts, formatBytes(int64(t.Rate))+"/s")
	}
	if t.ObjectsRate > 0 {
		parts = append(parts, fmt.Sprintf("%.1f objects/s", t.ObjectsRate))
	}
	switch {
	case t.State.Terminal():
	case t.ETASeconds > 0:
		parts = append(parts, "ETA "+time.Duration(t.ETASeconds*float64(time.Second)).Round(time.Second).String())
	case t.Counters["listing_done"] != 1:
		parts = append(parts, "ETA once listed")
	}
	return strings.Join(parts, " · ")
}

// migrationLine is the counts, bytes and rates on one line (watch).
func migrationLine(t dashboard.Transfer) string {
	s := migrationCounts(t) + " · " + formatBytes(t.Counters["bytes"])
	if r := migrationRate(t); r != "" && t.State == tasks.StateActive {
		s += " · " + r
	}
	return s
}

// maxListedFailures bounds the failures status prints; --json has all.
const maxListedFailures = 20

// migrationReport decodes a migration's report from its task result.
func migrationReport(result json.RawMessage) *tasks.MigrateReport {
	if len(result) == 0 {
		return nil
	}
	var rep tasks.MigrateReport
	if json.Unmarshal(result, &rep) != nil {
		return nil
	}
	return &rep
}

// failureLines are the report's failures, "key: reason", sorted by key, at
// most maxListedFailures, then how many more.
func failureLines(rep *tasks.MigrateReport, id string) []string {
	keys := make([]string, 0, len(rep.Failures))
	for k := range rep.Failures {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []string
	for i, k := range keys {
		if i == maxListedFailures {
			out = append(out, fmt.Sprintf("… and %d more: ferry status %s --json", len(keys)-i, id))
			break
		}
		out = append(out, k+": "+rep.Failures[k])
	}
	if n := rep.Failed - int64(len(keys)); n > 0 {
		out = append(out, fmt.Sprintf("(%d more failed objects are counted but not named: the report names the first %d)", n, len(keys)))
	}
	return out
}
