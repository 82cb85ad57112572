// Package scripts holds the shell scripts make runs; this test runs the demo
// script's output path with a stand-in si.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeSI stands in for bin/si: `si dev` writes what the demo reads and
// waits (a background job ignores SIGINT, so the test ends it); every other command prints a line on stdout and one on
// stderr, with what the demo picks out of it.
const fakeSI = `#!/usr/bin/env bash
case "$1" in
dev)
  dir=$3
  echo si_dev_token > "$dir/dev-token"
  echo '{"public_url": "http://127.0.0.1:9"}' > "$dir/dev.json"
  echo "si dev: the whole mesh"; echo "ready in 0.1s"
  exec sleep 600 ;;
credit) printf 'account   dev\ncredits   $0.0005\nunbilled  $0.00\n' ;;
account) printf 'unbilled  $0.0042\ncharged   $0.0542\n' ;;
invite) [ "${2:-}" = ls ] || echo "link:  http://127.0.0.1:9/join/si_inv_x" ;;
join) echo "secret (shown once; the HTTP API's si_guest cookie): si_gs_x" ;;
lora) [ "${2:-}" = ls ] && [ "${3:-}" = --json ] && echo '  "id": "lora_abc",' ;;
esac
echo "fake si $1 ran"
echo "fake si $1 to stderr" >&2
`

// make demo > demo.log 2>&1 keeps the whole output: nothing in the script
// reopens the file the output is redirected to (tee /dev/stderr did, and
// truncated it).
func TestDemoOutputRedirectedToAFileIsWhole(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	si := filepath.Join(dir, "si")
	if err := os.WriteFile(si, []byte(fakeSI), 0o755); err != nil {
		t.Fatal(err)
	}
	demoDir := filepath.Join(dir, "demo")
	logPath := filepath.Join(dir, "demo.log")
	// The same redirection as `make demo > demo.log 2>&1`.
	cmd := exec.Command("bash", "-c", `scripts/demo.sh > "$OUT" 2>&1`)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "SI="+si, "DEMO_DIR="+demoDir, "OUT="+logPath)
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(demoDir, "demo.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
		}
	})
	done := make(chan error, 1)
	go func() { done <- cmd.Run() }()
	select {
	case err := <-done:
		if err != nil {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("demo.sh: %v\n%s", err, b)
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("demo.sh did not finish within a minute")
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	if strings.ContainsRune(out, 0) {
		t.Fatalf("demo.log has NUL bytes: something truncated it while the demo wrote it\n%q", out)
	}
	// Every step's heading and what the commands wrote on both streams, in order.
	want := []string{"starting si dev in the background", "ready in 0.1s",
		"== 0. ", "fake si credit to stderr", "== 1. ", "fake si ask ran", "== 2. ", "== 3. ", "fake si escalate ran",
		"== 4. ", "== 5. ", "fake si balance ran", "== 6. ", "unbilled  $0.0042", "== 7. ", "fake si push ran",
		"== 8. ", "link:  http://127.0.0.1:9/join/si_inv_x", "fake si join to stderr", "secret (shown once",
		"== 9. ", "fake si stats ran", "Stop it with: make demo-stop"}
	last := -1
	for _, w := range want {
		i := strings.Index(out, w)
		if i < 0 || i < last {
			t.Fatalf("demo.log lacks %q (or has it out of order):\n%s", w, out)
		}
		last = i
	}
}

// No script writes through /dev/stdout or /dev/stderr by name: opening them
// truncates a file they are redirected to.
func TestScriptsDoNotReopenTheirOutput(t *testing.T) {
	files, _ := filepath.Glob("*.sh")
	files = append(files, "../Makefile")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for n, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "/dev/stderr") || strings.Contains(line, "/dev/stdout") {
				t.Errorf("%s:%d opens its output by name (use >&2, or printf the captured text): %s", f, n+1, line)
			}
		}
	}
}
