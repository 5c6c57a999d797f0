// Package deploy holds ferry's deployment files (Dockerfile, Kubernetes,
// systemd); this test checks them where no docker or kubectl is at hand.
package deploy

import (
	"bytes"
	"cmp"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ferryhq/ferry/dashboard"
)

// decodeAll decodes every document of a YAML file.
func decodeAll(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m != nil {
			docs = append(docs, m)
		}
	}
}

// at walks a decoded document: at(doc, "spec", "template", "spec").
func at(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("at %v: %T is not a mapping", path, v)
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				t.Fatalf("at %v: not a list of more than %d", path, k)
			}
			v = s[k]
		}
	}
	return v
}

func TestYAMLParses(t *testing.T) {
	t.Parallel()
	files := []string{filepath.Join("..", "docker-compose.yml"), filepath.Join("..", "ferry.example.yaml")}
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if docs := decodeAll(t, f); len(docs) == 0 {
			t.Errorf("%s: no YAML document", f)
		}
	}
}

// TestKustomization checks what `kubectl kustomize deploy/kubernetes` needs:
// every resource and generator file exists and parses, every resource has
// apiVersion, kind and a name, and the worker's grace period outlasts its
// shutdown timeout.
func TestKustomization(t *testing.T) {
	t.Parallel()
	dir := "kubernetes"
	k := decodeAll(t, filepath.Join(dir, "kustomization.yaml"))[0]
	if k["kind"] != "Kustomization" {
		t.Fatalf("kustomization.yaml kind = %v", k["kind"])
	}
	kinds := map[string]map[string]any{}
	resources, _ := k["resources"].([]any)
	if len(resources) == 0 {
		t.Fatal("kustomization.yaml lists no resources")
	}
	for _, r := range resources {
		for _, doc := range decodeAll(t, filepath.Join(dir, r.(string))) {
			name, _ := at(t, doc, "metadata", "name").(string)
			if doc["apiVersion"] == nil || doc["kind"] == nil || name == "" {
				t.Errorf("%s: a document lacks apiVersion, kind or metadata.name", r)
				continue
			}
			kinds[doc["kind"].(string)+"/"+name] = doc
		}
	}
	for _, g := range k["configMapGenerator"].([]any) {
		for _, f := range at(t, g, "files").([]any) {
			if _, err := os.Stat(filepath.Join(dir, f.(string))); err != nil {
				t.Errorf("configMapGenerator file: %v", err)
			}
		}
	}
	for _, want := range []string{"Deployment/ferry-worker", "Deployment/ferry-dashboard", "Service/ferry-dashboard",
		"Secret/ferry-credentials", "PodDisruptionBudget/ferry-worker", "ScaledObject/ferry-worker"} {
		if kinds[want] == nil {
			t.Errorf("no %s among the resources", want)
		}
	}

	// Grace period > preStop + shutdown_timeout.
	w := kinds["Deployment/ferry-worker"]
	if w == nil {
		t.FailNow()
	}
	grace := at(t, w, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	preStop := at(t, w, "spec", "template", "spec", "containers", 0, "lifecycle", "preStop", "sleep", "seconds").(int)
	var cfg struct {
		Worker struct {
			ShutdownTimeout string `yaml:"shutdown_timeout"`
		} `yaml:"worker"`
	}
	data, _ := os.ReadFile(filepath.Join(dir, "ferry.yaml"))
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	shutdown, err := time.ParseDuration(cmp.Or(cfg.Worker.ShutdownTimeout, "20s"))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(grace)*time.Second <= time.Duration(preStop)*time.Second+shutdown {
		t.Errorf("worker terminationGracePeriodSeconds %d <= preStop %ds + shutdown_timeout %s", grace, preStop, shutdown)
	}
	if at(t, w, "spec", "template", "spec", "containers", 0, "resources", "requests", "memory") == nil {
		t.Error("worker has no memory request")
	}
	trig := at(t, kinds["ScaledObject/ferry-worker"], "spec", "triggers", 0)
	if at(t, trig, "type") != "redis" || at(t, trig, "metadata", "listName") != "asynq:{default}:pending" {
		t.Errorf("KEDA trigger = %v, want redis on asynq:{default}:pending", trig)
	}
}

// TestCompose checks docker-compose.yml: Redis with AOF and noeviction, a
// healthcheck on every long-running service, two workers with a grace period
// longer than the shutdown timeout, and one read-only ferry.yaml.
func TestCompose(t *testing.T) {
	t.Parallel()
	c := decodeAll(t, filepath.Join("..", "docker-compose.yml"))[0]
	services := c["services"].(map[string]any)
	redisCmd := strings.Join(toStrings(at(t, services, "redis", "command")), " ")
	for _, want := range []string{"--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"} {
		if !strings.Contains(redisCmd, want) {
			t.Errorf("redis command %q lacks %q", redisCmd, want)
		}
	}
	for name, s := range services {
		svc := s.(map[string]any)
		oneShot := svc["restart"] == "no"
		if hc, _ := svc["healthcheck"].(map[string]any); !oneShot && (hc == nil || hc["test"] == nil) {
			t.Errorf("service %s has no healthcheck", name)
		}
	}
	if r := at(t, services, "worker", "deploy", "replicas"); r != 2 {
		t.Errorf("worker replicas = %v, want 2", r)
	}
	grace, err := time.ParseDuration(at(t, services, "worker", "stop_grace_period").(string))
	if err != nil || grace <= 20*time.Second {
		t.Errorf("worker stop_grace_period %v (%v), want > shutdown_timeout 20s", grace, err)
	}
	for _, name := range []string{"worker", "dashboard"} {
		vols := toStrings(at(t, services, name, "volumes"))
		i := slices.IndexFunc(vols, func(v string) bool { return strings.HasSuffix(v, ":/etc/ferry/ferry.yaml:ro") })
		if i < 0 {
			t.Errorf("%s does not mount ferry.yaml read-only: %v", name, vols)
			continue
		}
		src := strings.TrimPrefix(strings.Split(vols[i], ":")[0], "./")
		if _, err := os.Stat(filepath.Join("..", src)); err != nil {
			t.Errorf("%s mounts a missing file: %v", name, err)
		}
	}
	if at(t, services, "dashboard", "ports") == nil {
		t.Error("dashboard publishes no port")
	}
}

// TestDashboardTokenRequired: the shipped set-ups make a real dashboard
// token part of set-up. docker-compose.yml refuses to run without
// FERRY_DASHBOARD_TOKEN (no default); the Kubernetes dashboard reads it from
// a Secret that is required and that no manifest ships (so kubectl apply -k
// never overwrites the real one); any token value a manifest does carry is
// one the dashboard refuses. Both listen beyond loopback, where the
// dashboard refuses to start without a token.
func TestDashboardTokenRequired(t *testing.T) {
	t.Parallel()
	required := regexp.MustCompile(`^\$\{FERRY_DASHBOARD_TOKEN:\?[^}]*openssl rand[^}]*\}$`)
	c := decodeAll(t, filepath.Join("..", "docker-compose.yml"))[0]
	services := c["services"].(map[string]any)
	env, _ := at(t, services, "dashboard", "environment").(map[string]any)
	if v, _ := env["FERRY_DASHBOARD_TOKEN"].(string); !required.MatchString(v) {
		t.Errorf("docker-compose.yml dashboard FERRY_DASHBOARD_TOKEN = %q; want ${FERRY_DASHBOARD_TOKEN:?...openssl rand...}: required, no default", v)
	}
	for _, p := range toStrings(at(t, services, "dashboard", "ports")) {
		if !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("docker-compose.yml publishes the dashboard on %q; want 127.0.0.1 only", p)
		}
	}
	for _, f := range []string{filepath.Join("compose", "ferry.yaml"), filepath.Join("kubernetes", "ferry.yaml")} {
		addr, _ := at(t, decodeAll(t, f)[0], "dashboard", "addr").(string)
		if err := dashboard.CheckAccess(addr, "", nil); !errors.Is(err, dashboard.ErrTokenRequired) {
			t.Errorf("%s: dashboard.addr %q without a token: %v; the test assumes an address that requires one", f, addr, err)
		}
	}

	dir := "kubernetes"
	k := decodeAll(t, filepath.Join(dir, "kustomization.yaml"))[0]
	secrets := map[string]map[string]any{}
	var dash map[string]any
	for _, r := range k["resources"].([]any) {
		for _, doc := range decodeAll(t, filepath.Join(dir, r.(string))) {
			name, _ := at(t, doc, "metadata", "name").(string)
			switch doc["kind"] {
			case "Secret":
				secrets[name] = doc
			case "Deployment":
				if name == "ferry-dashboard" {
					dash = doc
				}
			}
		}
	}
	if dash == nil {
		t.Fatal("no Deployment/ferry-dashboard")
	}
	var ref map[string]any
	for _, e := range at(t, dash, "spec", "template", "spec", "containers", 0, "env").([]any) {
		if at(t, e, "name") == "FERRY_DASHBOARD_TOKEN" {
			ref, _ = at(t, e, "valueFrom", "secretKeyRef").(map[string]any)
		}
	}
	if ref == nil {
		t.Fatal("the dashboard Deployment does not take FERRY_DASHBOARD_TOKEN from a Secret")
	}
	if ref["optional"] == true {
		t.Error("the dashboard's token Secret is optional; want required")
	}
	if _, shipped := secrets[ref["name"].(string)]; shipped {
		t.Errorf("Secret %v is among the resources: kubectl apply -k would overwrite the real token", ref["name"])
	}
	// Whatever token value a shipped Secret carries, the dashboard refuses it.
	for name, s := range secrets {
		for _, field := range []string{"stringData", "data"} {
			m, _ := s[field].(map[string]any)
			if v, ok := m["FERRY_DASHBOARD_TOKEN"].(string); ok && dashboard.CheckToken(v) == nil {
				t.Errorf("Secret %s ships a FERRY_DASHBOARD_TOKEN the dashboard would accept", name)
			}
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestSystemdUnit: TimeoutStopSec outlasts the default shutdown timeout, and
// the unit runs as an unprivileged user with hardening on.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("systemd", "ferry-worker.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\d+)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("no TimeoutStopSec=<seconds>")
	}
	if n, _ := strconv.Atoi(m[1]); n <= 20 {
		t.Errorf("TimeoutStopSec=%d, want > 20 (the worker's default shutdown_timeout)", n)
	}
	for _, want := range []string{"User=ferry", "NoNewPrivileges=yes", "ProtectSystem=strict", "KillSignal=SIGTERM", "ExecStart=/usr/local/bin/ferry worker"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
}

// TestDockerfile: multi-stage, static, non-root.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	if n := strings.Count(df, "\nFROM "); n < 2 {
		t.Errorf("%d stages, want a multi-stage build", n)
	}
	for _, want := range []string{"CGO_ENABLED=0", "USER nonroot", "distroless/static", "./cmd/ferry"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
