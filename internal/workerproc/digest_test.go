package workerproc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFailedLogDigest(t *testing.T) {
	log := filepath.Join(t.TempDir(), "w.log")
	var b strings.Builder
	for i := range 50 {
		b.WriteString(`{"level":"info","msg":"part uploaded"}` + "\n")
		if i%5 == 0 {
			b.WriteString(`{"level":"warn","msg":"retry ` + string(rune('a'+i/5)) + `"}` + "\n")
		}
	}
	b.WriteString("panic: boom\n")
	b.WriteString(`{"level":"info","msg":"the end"}` + "\n")
	if err := os.WriteFile(log, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	d := failedLogDigest("TestX/sub", "worker-1", log)
	kept := filepath.Join(os.TempDir(), "ferry-failed-TestX_sub-worker-1.log")
	t.Cleanup(func() { os.Remove(kept) })
	if got, err := os.ReadFile(kept); err != nil || string(got) != b.String() {
		t.Errorf("log not kept whole at %s: %v", kept, err)
	}
	for _, want := range []string{kept, `"retry j"`, "panic: boom", `"the end"`} {
		if !strings.Contains(d, want) {
			t.Errorf("digest lacks %q:\n%s", want, d)
		}
	}
	// Only the last digestLines warnings and errors, never the info noise.
	if strings.Contains(d, `"retry e"`) || strings.Contains(d, "part uploaded") {
		t.Errorf("digest is not short:\n%s", d)
	}
}
