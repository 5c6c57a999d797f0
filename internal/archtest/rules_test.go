package archtest

import (
	"fmt"
	"slices"
	"strings"
)

// module is the import path every ferry package starts with.
const module = "github.com/ferryhq/ferry"

// testSupport lists the packages that exist for tests: only _test.go files may
// import them (bench has no code outside its tests, so nothing imports it).
var testSupport = []string{
	"bench",
	"internal/archtest",
	"internal/clustertest",
	"internal/faulttest",
	"internal/ferrybin",
	"internal/testenv",
	"internal/workerproc",
}

// internalLeaves are the production packages under internal/ that import no
// ferry package, so every other package may use them.
var internalLeaves = []string{
	"internal/objectid",
	"internal/s3key",
}

// internalOnlyFor are production packages under internal/ with the one
// package allowed to import them outside tests.
var internalOnlyFor = map[string]string{
	"internal/devserver": "cmd/ferry",
}

// pkg is what the rules need to know of one ferry package. Paths are relative
// to the module ("tasks", "internal/s3key"); imports of other modules are
// dropped.
type pkg struct {
	Path string
	// Imports are the production imports (non-_test.go files).
	Imports []string
	// TestImports are the imports of the package's _test.go files, both the
	// in-package and the external (_test) ones.
	TestImports []string
	// DocGo is the text of the package's doc.go; empty when it has none.
	DocGo string
}

// violation is one broken rule: the rule's words and the import that broke it.
type violation struct {
	Rule, Detail string
}

func (v violation) String() string { return fmt.Sprintf("rule %q broken: %s", v.Rule, v.Detail) }

// The rules, worded as in DESIGN.md; check reports them with these names.
const (
	ruleTasks       = "tasks never imports storage, worker or checkpoint"
	ruleBackends    = "storage and checkpoint import no ferry package except internal leaves"
	ruleLeaves      = "internal leaves import no ferry package"
	ruleWebhook     = "webhook imports no ferry package (webhook receivers import it alone)"
	ruleDashboard   = "dashboard never imports worker"
	ruleCmd         = "nothing imports cmd"
	ruleTestSupport = "production code never imports test support"
	ruleOnlyFor     = "an internal package reserved for one importer is imported only by it"
	ruleClassified  = "every package under internal/ is production or test support"
	ruleDocumented  = "every package under internal/ has a doc.go saying what it holds"
)

// The words a doc.go under internal/ uses to say what the package holds, as
// the start of a sentence: "Production leaf used by tasks and storage." or
// "Test support only: ...". They are matched case-sensitively, so "not for
// production code" does not count as either.
const (
	docProd = "Production "
	docTest = "Test support only"
)

// check applies every rule to the import graph and returns what is broken,
// in a stable order. Rules about production code look only at Imports, so a
// test may drive a real worker from dashboard's tests, say; "nothing imports
// cmd" and the test-support rules look at test files too.
func check(pkgs []pkg) []violation {
	byPath := make(map[string]pkg, len(pkgs))
	for _, p := range pkgs {
		byPath[p.Path] = p
	}
	var out []violation
	add := func(rule, format string, args ...any) {
		out = append(out, violation{rule, fmt.Sprintf(format, args...)})
	}

	// Never-imports rules follow production imports transitively, so a
	// forbidden package reached through a middle package is caught too.
	for _, r := range []struct {
		rule, from string
		never      []string
	}{
		{ruleTasks, "tasks", []string{"storage", "worker", "checkpoint"}},
		{ruleDashboard, "dashboard", []string{"worker"}},
	} {
		for _, bad := range r.never {
			if chain := importChain(byPath, r.from, bad); chain != nil {
				add(r.rule, "%s imports %s (production code: %s)", r.from, bad, strings.Join(chain, " -> "))
			}
		}
	}

	for _, p := range pkgs {
		switch {
		case p.Path == "storage" || p.Path == "checkpoint":
			for _, imp := range p.Imports {
				if !slices.Contains(internalLeaves, imp) {
					add(ruleBackends, "%s imports %s (production code); allowed: %s",
						p.Path, imp, strings.Join(internalLeaves, ", "))
				}
			}
		case slices.Contains(internalLeaves, p.Path):
			for _, imp := range p.Imports {
				add(ruleLeaves, "%s imports %s (production code)", p.Path, imp)
			}
		case p.Path == "webhook":
			for _, imp := range p.Imports {
				add(ruleWebhook, "%s imports %s (production code)", p.Path, imp)
			}
		}

		for _, e := range p.edges() {
			if isCmd(e.to) {
				add(ruleCmd, "%s imports %s (%s)", p.Path, e.to, e.kind)
			}
		}
		for _, imp := range p.Imports {
			if slices.Contains(testSupport, imp) {
				add(ruleTestSupport, "%s imports %s (production code); import it from _test.go files only", p.Path, imp)
			}
			if only, ok := internalOnlyFor[imp]; ok && p.Path != only {
				add(ruleOnlyFor, "%s imports %s (production code); only %s may", p.Path, imp, only)
			}
		}

		if !strings.HasPrefix(p.Path, "internal/") {
			continue
		}
		isTest := slices.Contains(testSupport, p.Path)
		isProd := slices.Contains(internalLeaves, p.Path) || internalOnlyFor[p.Path] != ""
		switch {
		case !isTest && !isProd:
			add(ruleClassified, "%s is in no list of internal/archtest/rules_test.go; add it to testSupport, internalLeaves or internalOnlyFor", p.Path)
		case p.DocGo == "":
			add(ruleDocumented, "%s has no doc.go", p.Path)
		case isTest && (!strings.Contains(p.DocGo, docTest) || strings.Contains(p.DocGo, docProd)):
			add(ruleDocumented, `%s/doc.go does not say %q (and only that)`, p.Path, docTest)
		case isProd && (!strings.Contains(p.DocGo, docProd) || strings.Contains(p.DocGo, docTest)):
			add(ruleDocumented, `%s/doc.go does not say %q (and only that)`, p.Path, docProd)
		}
	}
	return out
}

// edge is one import with the kind of file it is in.
type edge struct{ to, kind string }

func (p pkg) edges() []edge {
	var es []edge
	for _, imp := range p.Imports {
		es = append(es, edge{imp, "production code"})
	}
	for _, imp := range p.TestImports {
		es = append(es, edge{imp, "test file"})
	}
	return es
}

func isCmd(path string) bool { return path == "cmd" || strings.HasPrefix(path, "cmd/") }

// importChain returns the shortest chain of production imports from from to
// to (both included), or nil when from does not depend on to.
func importChain(byPath map[string]pkg, from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var chain []string
			for p := cur; p != ""; p = prev[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			return chain
		}
		for _, imp := range byPath[cur].Imports {
			if _, seen := prev[imp]; !seen {
				prev[imp] = cur
				queue = append(queue, imp)
			}
		}
	}
	return nil
}
