package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/test/harness"
)

// devMesh is a running si dev subprocess on ports of its own.
type devMesh struct {
	si, dataDir, frontend, ui, hubAPI, mailpit string
	metricsAddr, metrics                       string // host:port, and its /metrics URL
	pgPort                                     int
	banner                                     string // what si dev printed up to "ready in"

	cmd          *exec.Cmd
	stderr, rest bytes.Buffer // rest: stdout after the banner, complete once done is closed
	done         chan struct{}
	waitErr      error
}

// startDev starts si dev with its local hub named hubID, on free ports, with
// extra flags, and waits for its banner. It is interrupted (then killed) when
// the test ends unless stop ended it first.
func startDev(t *testing.T, si, hubID string, extra ...string) *devMesh {
	t.Helper()
	m := &devMesh{si: si, frontend: freeAddr(t), ui: freeAddr(t), hubAPI: freeAddr(t), mailpit: freeAddr(t),
		metricsAddr: freeAddr(t), dataDir: t.TempDir(), done: make(chan struct{})}
	m.metrics = "http://" + m.metricsAddr + "/metrics"
	sim, bridgeAddr, minioAddr, smtpAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	var err error
	if m.pgPort, err = devstack.FreePort("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	// Reachable by the postgres user, so the cluster lives (and is removed) with the test's directory.
	if err := os.Chmod(m.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"dev", "--data-dir", m.dataDir, "--temporal-listen", m.frontend, "--ui-listen", m.ui,
		"--sim-listen", sim, "--postgres-port", fmt.Sprint(m.pgPort), "--hub-id", hubID, "--account", "acme",
		"--bridge-listen", bridgeAddr, "--hub-api-listen", m.hubAPI, "--metrics-listen", m.metricsAddr,
		"--minio-listen", minioAddr, "--mailpit-smtp-listen", smtpAddr, "--mailpit-listen", m.mailpit}
	if os.Getenv("DATABASE_URL") != "" {
		args = append(args, "--database-url", harness.DatabaseURL(t))
	}
	m.cmd = exec.Command(si, append(args, extra...)...)
	m.cmd.Env = cleanEnv()
	stdout, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stderr = &m.stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	banner := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		var b strings.Builder
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "ready in") {
				banner <- b.String()
				break
			}
		}
		_, _ = io.Copy(&m.rest, stdout)
		m.waitErr = m.cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() {
		select {
		case <-m.done:
			return
		default:
		}
		_ = m.cmd.Process.Signal(os.Interrupt)
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	})
	select {
	case m.banner = <-banner:
	case <-m.done:
		// Temporal's embedded server logs (and exits) to its own file.
		log, _ := os.ReadFile(filepath.Join(m.dataDir, "temporal.log"))
		t.Fatalf("si dev exited before it was ready: %v\n%s\ntemporal.log ends:\n%s", m.waitErr, m.stderr.String(), lastLines(string(log), 20))
	case <-time.After(3 * time.Minute):
		t.Fatalf("si dev not ready after 3 minutes\n%s", m.stderr.String())
	}
	return m
}

// stop sends si dev Ctrl-C and waits up to limit for it to exit; its
// error is si dev's own (a non-zero exit) or the wait running out.
func (m *devMesh) stop(limit time.Duration) error {
	if err := m.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return err
	}
	select {
	case <-m.done:
		if m.waitErr != nil {
			return fmt.Errorf("si dev exit: %w\n%s", m.waitErr, m.stderr.String())
		}
		return nil
	case <-time.After(limit):
		return errors.New("si dev did not stop within " + limit.String() + " of SIGINT")
	}
}

// run runs si with args and returns its combined output.
func (m *devMesh) run(args ...string) (string, error) {
	cmd := exec.Command(m.si, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
