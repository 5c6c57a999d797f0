package tasks

import (
	"path"
	"strings"
)

// DirPrefix is ferry's one rule for a prefix that selects many objects (a
// migration's source and destination, a recursive delete, ls): prefixes are
// directories. It returns the literal key prefix to list for p:
//
//   - "" is everything (the whole bucket under the profile's prefix);
//   - "photos/" stays "photos/";
//   - "photos" is the directory "photos/": never photos-2019/... or
//     photos.bak, which a plain string match would take too;
//   - a trailing '*' asks for a raw prefix: "logs/2024*" is "logs/2024",
//     which does select logs/2024-old/... and logs/2024.txt. (A directory
//     whose name ends in '*' is written with its slash: "odd*/".)
//
// The payload decoders apply it (DecodeDelete, DecodeMigrate), so a Go
// producer, a raw JSON payload and a payload an older ferry left in Redis
// (where "photos" meant the raw prefix) all get the same, narrower meaning.
func DirPrefix(p string) string {
	switch {
	case p == "" || strings.HasSuffix(p, "/"):
		return p
	case strings.HasSuffix(p, "*"):
		return strings.TrimSuffix(p, "*")
	}
	return p + "/"
}

// dir is l with DirPrefix applied to its key: the prefix a many-object
// operation lists, which is what overlap checks must compare ("photos"
// and "photos-2019" do not overlap).
func (l Location) dir() Location {
	l.Key = DirPrefix(l.Key)
	return l
}

// globMatches reports whether the glob g (path.Match syntax) selects the
// relative key rel. Globs follow the directory rule too: g matches rel
// itself, or any of rel's leading directories, so "tmp" and "tmp/" select
// everything under tmp/, "photos*" selects photos/..., photos-2019/... and
// photos.bak, and "*/*.gz" selects a/b.gz. A g ending in "/" selects
// directories only. "**" selects every key.
func globMatches(g, rel string) bool {
	if g == "**" {
		return true
	}
	dirOnly := strings.HasSuffix(g, "/")
	g = strings.TrimSuffix(g, "/")
	if !dirOnly {
		if ok, _ := path.Match(g, rel); ok {
			return true
		}
	}
	return matchesLeadingDir(g, rel)
}

// matchesLeadingDir reports whether the glob g matches one of the leading
// directories of rel: "a" and "a/b" of "a/b/c".
func matchesLeadingDir(g, rel string) bool {
	for i := range len(rel) {
		if rel[i] != '/' {
			continue
		}
		if ok, _ := path.Match(g, rel[:i]); ok {
			return true
		}
	}
	return false
}

// Selects reports whether the migration takes the key rel (relative to
// the source or destination prefix): it matches some Include (or there are
// none) and no Exclude, by the rule of globMatches.
func (p MigratePayload) Selects(rel string) bool {
	matchAny := func(globs []string) bool {
		for _, g := range globs {
			if globMatches(g, rel) {
				return true
			}
		}
		return false
	}
	if len(p.Include) > 0 && !matchAny(p.Include) {
		return false
	}
	return !matchAny(p.Exclude)
}

// ExcludesDir reports whether every key under the directory dir (a key
// relative to the source prefix, ending in "/") is excluded: some Exclude
// matches dir or one of its leading directories. A local tree's walk does
// not read such a directory at all.
func (p MigratePayload) ExcludesDir(dir string) bool {
	for _, g := range p.Exclude {
		if g == "**" {
			return true
		}
		if matchesLeadingDir(strings.TrimSuffix(g, "/"), dir) {
			return true
		}
	}
	return false
}
