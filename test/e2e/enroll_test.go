package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
)

// TestHubEnrollsWithAToken: the operator, holding the database and the
// CA's certificate but not its key, issues a one-time token with
// `si device enroll --token-only`; `si hub enroll` on a machine with no
// database URL and no CA redeems it at a real bridge, which holds no CA key
// and has the CA role's worker sign; `si hub` then connects with the files
// it wrote. The token does not enroll twice, and a token naming another CA
// is refused before anything is sent.
func TestHubEnrollsWithAToken(t *testing.T) {
	si, _ := binaries(t)
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	w := workers.NewCA(m.Client, &activities.CA{CA: p.CA, Store: m.Store, TTL: time.Hour}, worker.Options{})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) {
		o.Enroller = &bridge.Temporal{Client: m.Client}
		o.EnrollCA = p.CA.CertPEM
	})
	addr := b.Addr().String()
	const device, account = "gpu-enroll", "acme-enroll"
	harness.EnsureAccount(t, m.Store, account)

	// The operator's side: the CA's certificate only.
	caDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(caDir, pki.CACertFile), p.CA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	opEnv := append(cleanEnv(), "HOME="+t.TempDir(), "SI_DATABASE_URL="+m.DatabaseURL)
	out, err := run(t, si, opEnv, "", "device", "enroll", "--token-only", "--id", device, "--account", account, "--ca-dir", caDir, "--json")
	if err != nil {
		t.Fatalf("si device enroll --token-only: %v\n%s", err, out)
	}
	var issued struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
		CASHA256  string    `json:"ca_sha256"`
	}
	if err := json.Unmarshal([]byte(out), &issued); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if d := time.Until(issued.ExpiresAt); d < 50*time.Minute || d > 70*time.Minute {
		t.Fatalf("the token's default lifetime is %s, want 1h", d)
	}
	if !strings.HasPrefix(issued.Token, "si1.") || !strings.HasSuffix(issued.Token, "."+issued.CASHA256) {
		t.Fatalf("token %q", issued.Token)
	}

	if out, err := run(t, si, opEnv, "", "device", "enroll", "--token-only", "--id", "gpu-x", "--account", "nobody", "--ca-dir", caDir); err == nil || !strings.Contains(out, "account nobody does not exist") {
		t.Fatalf("a token for an account that does not exist: %v\n%s", err, out)
	}
	// A token revoked before use (si device revoke) enrolls nothing.
	revoked, err := run(t, si, opEnv, "", "device", "enroll", "--token-only", "--id", "gpu-revoked", "--account", account, "--ca-dir", caDir, "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, revoked)
	}
	var rv struct{ Token string }
	if err := json.Unmarshal([]byte(revoked), &rv); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, si, opEnv, "", "device", "revoke", "--id", "gpu-revoked"); err != nil || !strings.Contains(out, "enrollment token(s) are revoked") {
		t.Fatalf("si device revoke of a device with only a token: %v\n%s", err, out)
	}

	// The hub's side: no database, no CA.
	hubHome := t.TempDir()
	hubEnv := append(cleanEnv(), "HOME="+hubHome)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(issued.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A token whose CA hash is another CA's: refused, and not spent.
	other := harness.NewPKI(t)
	otherSum, _ := pki.CAFingerprint(other.CA.CertPEM)
	tok, err := pki.ParseEnrollToken(issued.Token)
	if err != nil {
		t.Fatal(err)
	}
	forged := pki.EnrollToken{Secret: tok.Secret, CA: otherSum}
	out, err = run(t, si, hubEnv, "", "hub", "enroll", forged.String(), "--bridge", addr, "--id", device)
	if err == nil || !strings.Contains(out, "the bridge's CA is not the one this token names") {
		t.Fatalf("a token naming another CA: %v\n%s", err, out)
	}
	if out, err := run(t, si, hubEnv, "", "hub", "enroll", rv.Token, "--bridge", addr, "--id", "gpu-revoked"); err == nil || !strings.Contains(out, "the token expired") {
		t.Fatalf("a revoked token: %v\n%s", err, out)
	}
	out, err = run(t, si, hubEnv, "", "hub", "enroll", "--token-file", tokenFile, "--bridge", addr, "--id", device, "--json")
	if err != nil {
		t.Fatalf("si hub enroll: %v\n%s", err, out)
	}
	var enrolled struct {
		Account, State string
		Key            string `json:"key_path"`
		Cert           string `json:"cert_path"`
	}
	if err := json.Unmarshal([]byte(out), &enrolled); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if enrolled.Account != account || enrolled.State != "enrolled" {
		t.Fatalf("enrolled %+v", enrolled)
	}
	if fi, err := os.Stat(enrolled.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the key: %v %v", fi, err)
	}

	// si hub runs with what enrollment wrote (its default paths).
	h := &process{cmd: exec.Command(si, "hub", "--id", device, "--bridge", addr, "--no-worker", "--api-listen", freeAddr(t),
		"--metrics-listen", "", "--interval", "200ms"), exited: make(chan struct{})}
	h.cmd.Env = hubEnv
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
	deadline := time.Now().Add(30 * time.Second)
	for {
		hubs, err := m.Store.Hubs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(hubs) == 1 && hubs[0].DeviceID == device && hubs[0].Connected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the enrolled hub did not connect: %+v", hubs)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Spent: a second enrollment with the same token is refused.
	out, err = run(t, si, hubEnv, "", "hub", "enroll", "--token-file", tokenFile, "--bridge", addr, "--id", device, "--dir", t.TempDir()+"/"+device)
	if err == nil || !strings.Contains(out, "the token was used") {
		t.Fatalf("the token used twice: %v\n%s", err, out)
	}
}

// TestDevEnrollsAHubWithAToken: si dev runs the CA role with its bridge,
// so a second hub enrolls there with a token, as against si server.
func TestDevEnrollsAHubWithAToken(t *testing.T) {
	si, _ := binaries(t)
	m := startDev(t, si, "dev-enroll")
	b, err := os.ReadFile(filepath.Join(m.dataDir, "dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st config.DevState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	opEnv := append(cleanEnv(), "HOME="+t.TempDir(), "SI_DATABASE_URL="+st.DatabaseURL)
	tok, err := run(t, si, opEnv, "", "device", "enroll", "--token-only", "--id", "gpu-dev-second", "--account", "acme", "--ca-dir", st.CADir)
	if err != nil {
		t.Fatalf("si device enroll --token-only: %v\n%s", err, tok)
	}
	tok = strings.Fields(tok)[0] // the token; the hint follows on stderr
	out, err := run(t, si, append(cleanEnv(), "HOME="+t.TempDir()), "", "hub", "enroll", tok, "--bridge", st.BridgeAddress,
		"--id", "gpu-dev-second", "--wait", "30s")
	if err != nil || !strings.Contains(out, "device gpu-dev-second enrolled for account acme") {
		t.Fatalf("si hub enroll at si dev's bridge: %v\n%s", err, out)
	}
}
