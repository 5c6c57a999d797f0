package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDependencyRules checks the module's real import graph against the rules
// of DESIGN.md ("Layout and dependency direction"). A failure names the rule
// and the import that broke it.
func TestDependencyRules(t *testing.T) {
	pkgs := loadModule(t)
	for _, want := range []string{"tasks", "storage", "checkpoint", "worker", "dashboard", "cmd/ferry", "internal/s3key", "webhook"} {
		if !slices.ContainsFunc(pkgs, func(p pkg) bool { return p.Path == want }) {
			t.Fatalf("go list found no package %q: the graph is incomplete, the rules would pass vacuously", want)
		}
	}
	for _, v := range check(pkgs) {
		t.Error(v)
	}
}

// TestCheckCatchesEachRule feeds check a fake import graph that breaks every
// rule once, so a rule that can no longer fail is noticed.
func TestCheckCatchesEachRule(t *testing.T) {
	doc := func(s string) string { return "// Package x ...\n// " + s + "\npackage x\n" }
	clean := []pkg{
		{Path: "tasks", Imports: []string{"internal/s3key", "internal/objectid"}, TestImports: []string{"internal/testenv"}},
		{Path: "storage", Imports: []string{"internal/s3key"}, TestImports: []string{"internal/testenv"}},
		{Path: "checkpoint", TestImports: []string{"internal/testenv"}},
		{Path: "worker", Imports: []string{"tasks", "storage", "checkpoint"}, TestImports: []string{"internal/workerproc"}},
		{Path: "dashboard", Imports: []string{"tasks"}, TestImports: []string{"worker"}},
		{Path: "cmd/ferry", Imports: []string{"worker", "dashboard", "internal/devserver"}},
		{Path: "bench", TestImports: []string{"internal/workerproc"}},
		{Path: "webhook"},
		{Path: "internal/s3key", DocGo: doc("Production leaf used by tasks and storage.")},
		{Path: "internal/objectid", DocGo: doc("Production leaf.")},
		{Path: "internal/devserver", DocGo: doc("Production code of ferry dev.")},
		{Path: "internal/testenv", Imports: []string{"storage"}, DocGo: doc("Test support only.")},
		{Path: "internal/workerproc", Imports: []string{"worker"}, DocGo: doc("Test support only.")},
	}
	if got := check(clean); len(got) != 0 {
		t.Fatalf("the clean graph breaks rules: %v", got)
	}

	for _, tc := range []struct {
		name string
		edit func(map[string]*pkg) []pkg
		want violation
	}{
		{"tasks imports storage through a middle package", func(m map[string]*pkg) []pkg {
			m["tasks"].Imports = append(m["tasks"].Imports, "mid")
			return []pkg{{Path: "mid", Imports: []string{"storage"}}}
		}, violation{ruleTasks, "tasks imports storage (production code: tasks -> mid -> storage)"}},
		{"storage imports checkpoint", func(m map[string]*pkg) []pkg {
			m["storage"].Imports = append(m["storage"].Imports, "checkpoint")
			return nil
		}, violation{ruleBackends, "storage imports checkpoint (production code); allowed: internal/objectid, internal/s3key"}},
		{"checkpoint imports tasks", func(m map[string]*pkg) []pkg {
			m["checkpoint"].Imports = []string{"tasks"}
			return nil
		}, violation{ruleBackends, "checkpoint imports tasks (production code); allowed: internal/objectid, internal/s3key"}},
		{"a leaf imports tasks", func(m map[string]*pkg) []pkg {
			m["internal/objectid"].Imports = []string{"tasks"}
			return nil
		}, violation{ruleLeaves, "internal/objectid imports tasks (production code)"}},
		{"webhook imports tasks", func(m map[string]*pkg) []pkg {
			m["webhook"].Imports = []string{"tasks"}
			return nil
		}, violation{ruleWebhook, "webhook imports tasks (production code)"}},
		{"dashboard imports worker", func(m map[string]*pkg) []pkg {
			m["dashboard"].Imports = append(m["dashboard"].Imports, "worker")
			return nil
		}, violation{ruleDashboard, "dashboard imports worker (production code: dashboard -> worker)"}},
		{"a test imports cmd", func(m map[string]*pkg) []pkg {
			m["worker"].TestImports = append(m["worker"].TestImports, "cmd/ferry")
			return nil
		}, violation{ruleCmd, "worker imports cmd/ferry (test file)"}},
		{"worker imports workerproc outside tests", func(m map[string]*pkg) []pkg {
			m["worker"].Imports = append(m["worker"].Imports, "internal/workerproc")
			return nil
		}, violation{ruleTestSupport, "worker imports internal/workerproc (production code); import it from _test.go files only"}},
		{"test support imports test support outside tests", func(m map[string]*pkg) []pkg {
			m["internal/workerproc"].Imports = append(m["internal/workerproc"].Imports, "internal/testenv")
			return nil
		}, violation{ruleTestSupport, "internal/workerproc imports internal/testenv (production code); import it from _test.go files only"}},
		{"dashboard imports devserver", func(m map[string]*pkg) []pkg {
			m["dashboard"].Imports = append(m["dashboard"].Imports, "internal/devserver")
			return nil
		}, violation{ruleOnlyFor, "dashboard imports internal/devserver (production code); only cmd/ferry may"}},
		{"an unlisted internal package", func(map[string]*pkg) []pkg {
			return []pkg{{Path: "internal/util", DocGo: doc("Production leaf.")}}
		}, violation{ruleClassified, "internal/util is in no list of internal/archtest/rules_test.go; add it to testSupport, internalLeaves or internalOnlyFor"}},
		{"an internal package without doc.go", func(m map[string]*pkg) []pkg {
			m["internal/s3key"].DocGo = ""
			return nil
		}, violation{ruleDocumented, "internal/s3key has no doc.go"}},
		{"test support documented as production", func(m map[string]*pkg) []pkg {
			m["internal/testenv"].DocGo = doc("It is not for production code.")
			return nil
		}, violation{ruleDocumented, `internal/testenv/doc.go does not say "Test support only" (and only that)`}},
		{"production documented as test support", func(m map[string]*pkg) []pkg {
			m["internal/devserver"].DocGo = doc("Test support only.")
			return nil
		}, violation{ruleDocumented, `internal/devserver/doc.go does not say "Production " (and only that)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := make(map[string]*pkg)
			var graph []pkg
			for _, p := range clean {
				p.Imports = slices.Clone(p.Imports)
				p.TestImports = slices.Clone(p.TestImports)
				graph = append(graph, p)
			}
			for i := range graph {
				m[graph[i].Path] = &graph[i]
			}
			graph = append(graph, tc.edit(m)...)
			got := check(graph)
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("check reported %v\nwant exactly [%v]", got, tc.want)
			}
		})
	}
}

// listed is the part of `go list -json` output loadModule reads.
type listed struct {
	ImportPath   string
	Dir          string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Error        *struct{ Err string }
}

// loadModule lists every package of the module with `go list` (no build, no
// network: the module cache is enough) and keeps the imports of ferry
// packages only.
func loadModule(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Dir,Imports,TestImports,XTestImports,Error", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var l listed
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if l.Error != nil {
			t.Fatalf("go list %s: %s", l.ImportPath, l.Error.Err)
		}
		p := pkg{
			Path:        rel(l.ImportPath),
			Imports:     ferryOnly(l.Imports),
			TestImports: ferryOnly(append(l.TestImports, l.XTestImports...)),
		}
		// The external test package imports the package itself; that is no edge.
		p.TestImports = slices.DeleteFunc(p.TestImports, func(s string) bool { return s == p.Path })
		if b, err := os.ReadFile(filepath.Join(l.Dir, "doc.go")); err == nil {
			p.DocGo = string(b)
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }

func ferryOnly(imports []string) []string {
	var out []string
	for _, imp := range imports {
		if imp == module || strings.HasPrefix(imp, module+"/") {
			out = append(out, rel(imp))
		}
	}
	return out
}
