package cli

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/agent"
)

func TestHubSecretFileDiscovery(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	devDir := filepath.Join(home, "dev")
	if _, err := hubSecretFile("127.0.0.1:7450", devDir); err == nil || !strings.Contains(err.Error(), "--hub-secret-file") {
		t.Fatalf("no hub at all: %v", err)
	}
	mk := func(path string) string {
		t.Helper()
		if _, err := agent.LoadOrCreateSecret(path); err != nil {
			t.Fatal(err)
		}
		return path
	}
	one := mk(filepath.Join(home, ".si", "devices", "gpu-a", agent.SecretFile))
	if got, err := hubSecretFile("127.0.0.1:7450", devDir); err != nil || got != one {
		t.Fatalf("one enrolled hub: %q %v", got, err)
	}
	mk(filepath.Join(home, ".si", "devices", "gpu-b", agent.SecretFile))
	if _, err := hubSecretFile("127.0.0.1:7450", devDir); err == nil || !strings.Contains(err.Error(), "2 hubs") {
		t.Fatalf("two enrolled hubs: %v", err)
	}
	// A running si dev whose hub answers at the address wins.
	if err := os.MkdirAll(devDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(devDir, "dev.json"), []byte(`{"hub_api":"127.0.0.1:7450"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := hubSecretFile("127.0.0.1:7450", devDir); err != nil || got != filepath.Join(devDir, "hub", agent.SecretFile) {
		t.Fatalf("si dev's hub: %q %v", got, err)
	}
	if _, err := hubSecretFile("127.0.0.1:9999", devDir); err == nil {
		t.Fatal("si dev's secret used for another address")
	}
}

// si escalate sends the local hub's secret only to a loopback address: the
// hub's API answers nothing else (its Host check), so --hub-api naming
// another machine would hand that machine the secret for nothing.
func TestEscalateSendsTheSecretOnlyToLoopback(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	secret, err := agent.LoadOrCreateSecret(filepath.Join(home, ".si", "devices", "gpu-a", agent.SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r.Header.Get("Authorization"):
		default:
		}
		w.WriteHeader(http.StatusUnauthorized)
	})}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	// Another machine's name for this listener: not a loopback host.
	_, port, _ := net.SplitHostPort(l.Addr().String())
	other := "127.0.0.1.nip.invalid:" + port
	var out, errb strings.Builder
	code := Main([]string{"escalate", "--hub-api", other, "--dev-dir", filepath.Join(home, "dev"), "hello"}, &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), "loopback") {
		t.Fatalf("si escalate --hub-api %s: code %d, stderr %q", other, code, errb.String())
	}
	for _, api := range []string{"10.1.2.3:7450", "hub.example.com:7450", "0.0.0.0:7450"} {
		out.Reset()
		errb.Reset()
		if code := Main([]string{"escalate", "--hub-api", api, "--dev-dir", filepath.Join(home, "dev"), "hello"}, &out, &errb); code == 0 ||
			!strings.Contains(errb.String(), "loopback") {
			t.Errorf("si escalate --hub-api %s: code %d, stderr %q", api, code, errb.String())
		}
	}
	// The loopback listener itself gets the secret.
	out.Reset()
	errb.Reset()
	Main([]string{"escalate", "--hub-api", l.Addr().String(), "--dev-dir", filepath.Join(home, "dev"), "hello"}, &out, &errb)
	select {
	case h := <-got:
		if h != "Bearer "+secret {
			t.Fatalf("the loopback hub got %q", h)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the loopback hub got no request")
	}
}
