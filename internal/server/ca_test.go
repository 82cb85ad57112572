package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/server"
	"github.com/superinstance/mesh/test/harness"
)

// A bridge given its own certificate runs with the CA's certificate alone:
// the directory it reads holds no CA key, and neither a bridge that would
// issue its own certificate nor the ca role starts from it.
func TestBridgeRunsWithoutTheCAKey(t *testing.T) {
	c := harness.Client(t)
	st := harness.Store(t)
	ca, err := pki.InitCA(t.TempDir(), false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	public := t.TempDir()
	cert, key := filepath.Join(public, "bridge-cert.pem"), filepath.Join(public, "bridge-key.pem")
	for p, b := range map[string][]byte{cert: is.CertPEM, key: is.KeyPEM, filepath.Join(public, pki.CACertFile): ca.CertPEM} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bridgeOnly := map[string]bool{server.RoleBridge: true}
	s, err := server.Start(server.Options{Roles: bridgeOnly, BridgeListen: "127.0.0.1:0", CADir: public,
		ServerCertFile: cert, ServerKeyFile: key, Temporal: c, Store: st})
	if err != nil {
		t.Fatalf("a bridge with its certificate and ca.pem, no CA key: %v", err)
	}
	s.Stop()

	_, err = server.Start(server.Options{Roles: bridgeOnly, BridgeListen: "127.0.0.1:0", CADir: public, Temporal: c, Store: st})
	if err == nil || !strings.Contains(err.Error(), "--server-cert") {
		t.Fatalf("a bridge without a certificate or CA key: %v, want an error naming --server-cert", err)
	}
	_, err = server.Start(server.Options{Roles: map[string]bool{server.RoleCA: true}, CADir: public, Temporal: c, Store: st})
	if err == nil || !strings.Contains(err.Error(), "ca role") {
		t.Fatalf("the ca role without the CA key: %v", err)
	}
}
