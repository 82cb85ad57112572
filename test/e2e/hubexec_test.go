package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/hubcmd"
	"github.com/superinstance/mesh/internal/cli"
	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// TestSIHubExec runs the real si hub, holding only its device files, with
// an allow-list beside its certificate, and the operator's si hub exec
// against it: an admitted command runs, others are refused, and the hub's
// audit log (found beside the allow-list, with the certificate's account)
// has both.
func TestSIHubExec(t *testing.T) {
	si, _ := binaries(t)
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	device, account := harness.UniqueID("gpu-exec"), harness.UniqueID("acme")
	harness.EnsureAccount(t, m.Store, account)
	is, err := p.CA.IssueDevice(pki.Identity{DeviceID: device, Account: account}, nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Store.RegisterCert(context.Background(), device, account, pki.Serial(is.Cert), is.Cert.NotAfter); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := is.Save(dir, p.CA.CertPEM); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, hubcmd.AllowListFile), []byte(`{"commands": [{"name": "hello", "path": "/usr/bin/echo", "args": [["<word>"]]},
		{"name": "nap", "path": "/usr/bin/sleep", "args": [["<uint>"]], "timeout": "2m"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	h := &process{cmd: exec.Command(si, "hub", "--bridge", b.Addr().String(), "--cert", filepath.Join(dir, pki.CertFile), "--key", filepath.Join(dir, pki.KeyFile),
		"--ca", filepath.Join(dir, pki.CACertFile), "--api-listen", freeAddr(t), "--metrics-listen", "", "--interval", "200ms", "--namespace", devstack.Namespace),
		exited: make(chan struct{})}
	h.cmd.Env = append(cleanEnv(), "HOME="+t.TempDir())
	h.cmd.Stdout, h.cmd.Stderr = h, h
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = h.cmd.Wait(); close(h.exited) }()
	t.Cleanup(func() {
		_ = h.cmd.Process.Kill()
		<-h.exited
		if t.Failed() {
			t.Logf("si hub:\n%s", h.output())
		}
	})
	siExec := func(args ...string) (string, string, int) {
		var out, errb strings.Builder
		code := cli.Main(append([]string{"hub", "exec", "--temporal-address", harness.Temporal(t), "--namespace", devstack.Namespace,
			"--device", device, "--asked-by", "e2e", "--pickup", "20s"}, args...), &out, &errb)
		return out.String(), errb.String(), code
	}
	// The first request waits for the hub's worker to poll (--pickup).
	if out, errs, code := siExec("--", "hello", "world"); code != 0 || out != "world\n" {
		t.Fatalf("hello world: exit %d %q %q", code, out, errs)
	}
	if !strings.Contains(h.output(), "commands: allow-list "+filepath.Join(dir, hubcmd.AllowListFile)) {
		t.Fatalf("si hub does not name its allow-list:\n%s", h.output())
	}
	if out, errs, code := siExec("--", "hello", "--help"); code != 3 || out != "" || !strings.Contains(errs, "match none") {
		t.Fatalf("a flag for the word: exit %d %q %q", code, out, errs)
	}
	var out, errb strings.Builder
	if code := cli.Main([]string{"hub", "commands", "--commands", filepath.Join(dir, hubcmd.AllowListFile), "--json"}, &out, &errb); code != 0 {
		t.Fatalf("si hub commands: %d %s", code, errb.String())
	}
	var v struct {
		AuditLog string             `json:"audit_log"`
		Recent   []hubcmd.AuditLine `json:"recent"`
	}
	if err := json.Unmarshal([]byte(out.String()), &v); err != nil {
		t.Fatal(err)
	}
	if v.AuditLog != filepath.Join(dir, hubcmd.AuditFile) || len(v.Recent) != 3 {
		t.Fatalf("audit %s: %+v", v.AuditLog, v.Recent)
	}
	if f, r := v.Recent[1], v.Recent[2]; f.Event != hubcmd.EventFinished || f.Account != account || f.AskedBy != "e2e" ||
		r.Event != hubcmd.EventRefused || !strings.Contains(r.Refused, "match none") {
		t.Fatalf("audit lines %+v", v.Recent)
	}

	// Ctrl-C on si hub exec cancels the request: the hub kills the
	// command long before its minute is up, and si says so and exits 130.
	nap := exec.Command(si, "hub", "exec", "--temporal-address", harness.Temporal(t), "--namespace", devstack.Namespace,
		"--device", device, "--asked-by", "e2e", "--timeout", "2m", "--", "nap", "60")
	nap.Env = cleanEnv()
	var napErr strings.Builder
	nap.Stderr = &napErr
	if err := nap.Start(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	for {
		lines, _ := hubcmd.Recent(filepath.Join(dir, hubcmd.AuditFile), 10)
		if n := len(lines); n > 0 && lines[n-1].Event == hubcmd.EventStarted && lines[n-1].Command == "nap" {
			break
		}
		if time.Since(started) > 30*time.Second {
			_ = nap.Process.Kill()
			t.Fatalf("the hub never started nap: %s", napErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := nap.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	interrupted := time.Now()
	err = nap.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 || !strings.Contains(napErr.String(), "cancelled: the hub killed nap") || time.Since(interrupted) > 20*time.Second {
		t.Fatalf("si hub exec interrupted: %v after %s, stderr %q", err, time.Since(interrupted), napErr.String())
	}
	lines, err := hubcmd.Recent(filepath.Join(dir, hubcmd.AuditFile), 10)
	if err != nil || len(lines) == 0 {
		t.Fatalf("the hub's audit after the interrupt: %v", err)
	}
	if l := lines[len(lines)-1]; l.Event != hubcmd.EventFinished || l.Command != "nap" || !l.Cancelled {
		t.Fatalf("the hub's audit after the interrupt: %+v", lines)
	}
}
