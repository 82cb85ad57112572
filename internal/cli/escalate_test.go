package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
