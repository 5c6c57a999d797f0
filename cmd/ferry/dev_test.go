package main

import (
	"bytes"
	"cmp"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferryhq/ferry/internal/ferrybin"
	"github.com/ferryhq/ferry/internal/testenv"
)

// devBundle is one `ferry dev` under test: its ports, directories and the
// environment other ferry commands use to reach it.
type devBundle struct {
	dir, dataDir                string
	bin                         string // the ferry binary; "" means ferryBin
	redisPort, s3Port, dashPort int
	env                         []string
}

func setupDev(t *testing.T) devBundle {
	t.Helper()
	d := devBundle{dir: t.TempDir()}
	d.dataDir = filepath.Join(d.dir, "data")
	for _, p := range []*int{&d.redisPort, &d.s3Port, &d.dashPort} {
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		*p = port
	}
	d.env = []string{envConfig + "=" + filepath.Join(d.dataDir, "ferry.yaml"),
		envRedisURL + "=redis://127.0.0.1:" + strconv.Itoa(d.redisPort) + "/0"}
	return d
}

func (d devBundle) args(extra ...string) []string {
	return append([]string{"dev", "--data-dir", d.dataDir, "--log-format", "json",
		"--addr", "127.0.0.1:" + strconv.Itoa(d.dashPort),
		"--redis-port", strconv.Itoa(d.redisPort), "--s3-port", strconv.Itoa(d.s3Port)}, extra...)
}

// devProc is a running `ferry dev`.
type devProc struct {
	cmd    *exec.Cmd
	stdout *ferrybin.LockedBuffer
	stderr *ferrybin.LockedBuffer
	done   chan error
}

// start runs `ferry dev` until it logs that it is ready. The test's cleanup
// stops it if the test did not.
func (d devBundle) start(t *testing.T, extra ...string) *devProc {
	t.Helper()
	cmd := exec.Command(cmp.Or(d.bin, ferryBin), d.args(extra...)...)
	cmd.Dir = d.dir
	cmd.Env = ferrybin.Env(d.dir)
	p := &devProc{cmd: cmd, stdout: &ferrybin.LockedBuffer{}, stderr: &ferrybin.LockedBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("ferry dev stdout:\n%s\nstderr:\n%s", p.stdout, p.stderr)
		}
	})
	// stdout and stderr reach their buffers through two pipes copied by two
	// goroutines, so the "ready" log line on stderr can arrive before the
	// banner written earlier on stdout: wait for both.
	deadline := time.After(30 * time.Second)
	for !strings.Contains(p.stderr.String(), "ferry dev ready") || !strings.Contains(p.stdout.String(), "Ctrl-C stops everything") {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("ferry dev exited at start: %v\nstdout:\n%s\nstderr:\n%s", err, p.stdout, p.stderr)
		case <-deadline:
			t.Fatalf("ferry dev not ready within 30s:\n%s", p.stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return p
}

// stop sends SIGINT (Ctrl-C) and expects a clean exit.
func (p *devProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("ferry dev exited with %v after Ctrl-C, want 0\nstderr:\n%s", err, p.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("ferry dev did not stop within 30s of Ctrl-C")
	}
	if !strings.Contains(p.stderr.String(), "ferry dev: stopped") {
		t.Errorf("no 'stopped' message after Ctrl-C:\n%s", p.stderr)
	}
}

// s3Client is a plain SDK client on the dev S3 server, independent of
// ferry's storage package.
func (d devBundle) s3Client() *s3.Client {
	return s3.New(s3.Options{
		Region:                     devRegion,
		BaseEndpoint:               aws.String("http://127.0.0.1:" + strconv.Itoa(d.s3Port)),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider("any", "thing", ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

func getObject(t *testing.T, c *s3.Client, bucket, key string) []byte {
	t.Helper()
	out, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("GetObject s3://%s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDev: ferry dev starts, a `ferry upload --wait` from "another
// terminal" (its printed FERRY_CONFIG) goes through the embedded Redis
// (asynq's Lua scripts on miniredis) and S3, and the object survives a
// restart of ferry dev.
func TestDev(t *testing.T) {
	t.Parallel()
	d := setupDev(t)
	p := d.start(t)
	out := p.stdout.String()
	for _, want := range []string{
		"for development only",
		"http://127.0.0.1:" + strconv.Itoa(d.dashPort),
		"export FERRY_CONFIG=" + filepath.Join(d.dataDir, "ferry.yaml") + " FERRY_REDIS_URL=redis://127.0.0.1:" + strconv.Itoa(d.redisPort) + "/0",
		shellQuote(ferryBin) + " upload ./data/uploads/hello.txt s3://dev/hello.txt --wait",
		shellQuote(ferryBin) + " watch <task id>",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(p.stderr.String(), "Redis state is in memory") {
		t.Errorf("no in-memory warning on stderr:\n%s", p.stderr)
	}

	// 12 MiB in 5 MiB parts: a multipart upload with checkpoints.
	content := make([]byte, 12<<20+123)
	rand.NewChaCha8([32]byte{1}).Read(content)
	writeFile(t, filepath.Join(d.dir, "big.bin"), string(content))
	writeFile(t, filepath.Join(d.dir, "small.txt"), "hello, dev\n")
	r := run(t, d.dir, d.env, "", "upload", "./big.bin", "s3://dev/t/big.bin", "--part-size", "5MiB", "--wait")
	if r.Code != 0 || !strings.Contains(r.Stdout, "completed") {
		t.Fatalf("ferry upload --wait: %s", r)
	}
	// No --profile: "default" is the dev profile.
	r = run(t, d.dir, d.env, "", "put", "./small.txt", "s3://dev/t/small.txt", "--wait")
	if r.Code != 0 {
		t.Fatalf("ferry put --wait: %s", r)
	}
	c := d.s3Client()
	if got := getObject(t, c, "dev", "t/big.bin"); !bytes.Equal(got, content) {
		t.Fatalf("s3://dev/t/big.bin: %d bytes differ from the %d uploaded", len(got), len(content))
	}

	p.stop(t)
	p = d.start(t)
	if got := getObject(t, c, "dev", "t/big.bin"); !bytes.Equal(got, content) {
		t.Fatalf("after a restart, s3://dev/t/big.bin: %d bytes differ from the %d uploaded", len(got), len(content))
	}
	if got := string(getObject(t, c, "dev", "t/small.txt")); got != "hello, dev\n" {
		t.Fatalf("after a restart, s3://dev/t/small.txt = %q", got)
	}
	r = run(t, d.dir, d.env, "", "ls", "s3://dev/t/")
	if r.Code != 0 || !strings.Contains(r.Stdout, "t/big.bin") || !strings.Contains(r.Stdout, "t/small.txt") {
		t.Fatalf("ferry ls after a restart: %s", r)
	}
	p.stop(t)
}

// TestDevPortTaken: each taken port is refused with a message naming the
// flag that changes it, before anything starts.
func TestDevPortTaken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		flag string
		port func(d devBundle) int
	}{
		{desc: "redis", flag: "--redis-port", port: func(d devBundle) int { return d.redisPort }},
		{desc: "s3", flag: "--s3-port", port: func(d devBundle) int { return d.s3Port }},
		{desc: "dashboard", flag: "--addr", port: func(d devBundle) int { return d.dashPort }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			d := setupDev(t)
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(tc.port(d)))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, ferryBin, d.args()...)
			cmd.Dir, cmd.Env = d.dir, ferrybin.Env(d.dir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err = cmd.Run()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitError {
				t.Fatalf("ferry dev with port %d taken: %v, want exit %d\n%s", tc.port(d), err, exitError, stderr.String())
			}
			msg := stderr.String()
			for _, want := range []string{"port is taken", tc.flag, strconv.Itoa(tc.port(d))} {
				if !strings.Contains(msg, want) {
					t.Errorf("message lacks %q:\n%s", want, msg)
				}
			}
		})
	}
}

// TestDevDemo: --demo runs its showcase to the end, including the 200 MiB
// upload interrupted by a worker restart and resumed from its checkpoint.
func TestDevDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and uploads 200 MiB")
	}
	t.Parallel()
	d := setupDev(t)
	p := d.start(t, "--demo")
	deadline := time.After(120 * time.Second)
	for !strings.Contains(p.stdout.String(), "demo: done") {
		if strings.Contains(p.stdout.String(), "demo: FAILED") {
			t.Fatalf("demo failed:\n%s", p.stdout)
		}
		select {
		case <-deadline:
			t.Fatalf("demo not done within 120s:\n%s", p.stdout)
		case <-time.After(100 * time.Millisecond):
		}
	}
	out := p.stdout.String()
	for _, want := range []string{"3 puts completed", "copy, move and delete completed", "restarting the worker", "resumed from its checkpoint at"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	c := d.s3Client()
	if got := string(getObject(t, c, "dev", "demo/copies/hello.txt")); got != "hello from ferry dev\n" {
		t.Errorf("demo/copies/hello.txt = %q", got)
	}
	head, err := c.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("dev"), Key: aws.String(demoBigKey)})
	if err != nil || aws.ToInt64(head.ContentLength) != demoBigSize {
		t.Fatalf("HeadObject %s: %v, size %d, want %d", demoBigKey, err, aws.ToInt64(head.ContentLength), demoBigSize)
	}
	for _, gone := range []string{"demo/report.json", "demo/tmp/scratch.txt"} {
		if _, err := c.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("dev"), Key: aws.String(gone)}); err == nil {
			t.Errorf("%s still exists after the demo's move/delete", gone)
		}
	}
	p.stop(t)
}

// TestShippedConfigs: the config files the repository ships load with
// ferry's strict decoder (unknown keys are errors).
func TestShippedConfigs(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	for _, f := range []string{"ferry.example.yaml", "deploy/compose/ferry.yaml", "deploy/kubernetes/ferry.yaml"} {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			c, err := loadConfig(filepath.Join(root, f), "", func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := c.Profiles["default"]; !ok {
				t.Errorf("%s has no default profile: %v", f, c.profileNames())
			}
		})
	}
}

// TestDevBannerWorksAsPasted: after `make dev` (bin/ferry, not on PATH) the
// banner's "In another terminal" lines, pasted into a shell in the same
// directory, upload the sample file.
func TestDevBannerWorksAsPasted(t *testing.T) {
	t.Parallel()
	d := setupDev(t)
	d.bin = filepath.Join(d.dir, "bin", "ferry")
	exe, err := os.ReadFile(ferryBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(d.bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	p := d.start(t)
	var pasted []string
	for _, l := range strings.Split(p.stdout.String(), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "export FERRY_CONFIG=") || strings.Contains(l, " upload ") {
			pasted = append(pasted, l)
		}
	}
	if len(pasted) != 2 || !strings.HasPrefix(pasted[1], "./bin/ferry upload ") {
		t.Fatalf("banner lines to paste: %q; want the export and ./bin/ferry upload ...:\n%s", pasted, p.stdout)
	}
	// A shell whose PATH has no ferry, as a newcomer's has.
	if path, err := exec.LookPath("ferry"); err == nil {
		t.Logf("note: a ferry is on PATH (%s); the shell below does not see it", path)
	}
	sh := exec.CommandContext(t.Context(), "sh", "-c", strings.Join(pasted, "\n"))
	sh.Dir = d.dir
	sh.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + d.dir, "AWS_EC2_METADATA_DISABLED=true"}
	out, err := sh.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "completed") {
		t.Fatalf("pasted lines: %v\n%s", err, out)
	}
	if got := string(getObject(t, d.s3Client(), "dev", "hello.txt")); got != "hello from ferry dev\n" {
		t.Fatalf("s3://dev/hello.txt = %q", got)
	}
	p.stop(t)
}

func TestFerryCommand(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "bin", "ferry")
	other := filepath.Join(t.TempDir(), "ferry")
	for _, f := range []string{exe, other} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, f, "#!/bin/sh\n")
	}
	notFound := func(string) (string, error) { return "", exec.ErrNotFound }
	found := func(p string) func(string) (string, error) { return func(string) (string, error) { return p, nil } }
	for _, tc := range []struct {
		exe, cwd string
		look     func(string) (string, error)
		want     string
	}{
		{exe, dir, notFound, "./bin/ferry"},
		{exe, dir, found(other), "./bin/ferry"},
		{exe, dir, found(exe), "ferry"},
		{exe, filepath.Join(dir, "bin"), notFound, "./ferry"},
		{exe, t.TempDir(), notFound, exe},
		{"/tmp/go build/ferry", "/work", notFound, "'/tmp/go build/ferry'"},
		{"", dir, notFound, "ferry"},
	} {
		if got := ferryCommand(tc.exe, tc.cwd, tc.look); got != tc.want {
			t.Errorf("ferryCommand(%q, %q) = %q; want %q", tc.exe, tc.cwd, got, tc.want)
		}
	}
}
