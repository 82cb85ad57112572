package agent

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/pki"
)

// A bridge, or anyone on its path, that answers a renewal with a
// certificate for another device, from another CA, or for a key other than
// the one the hub made, changes nothing: the hub keeps its certificate and
// files. A good answer is saved and served at the next handshake.
func TestInstallChecksTheRenewedCertificate(t *testing.T) {
	now := time.Now()
	ca, _ := pki.InitCA(t.TempDir(), false, now)
	other, _ := pki.InitCA(t.TempDir(), false, now)
	id := pki.Identity{DeviceID: "gpu-1", Account: "acme"}
	first, err := ca.IssueDevice(id, nil, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile)
	_ = os.WriteFile(certPath, first.CertPEM, 0o644)
	_ = os.WriteFile(keyPath, first.KeyPEM, 0o600)
	c, err := NewCerts(ca.CertPEM, first.CertPEM, first.KeyPEM, certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewDeviceKey()
	keyPEM, _ := pki.KeyPEM(key)
	csr, _ := pki.NewCSR(key)
	sign := func(ca *pki.CA, id pki.Identity) []byte {
		is, err := ca.SignDeviceCSR(csr, id, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		return is.CertPEM
	}
	unrelated, _ := ca.IssueDevice(id, nil, time.Hour, now)
	for name, certPEM := range map[string][]byte{
		"another device":  sign(ca, pki.Identity{DeviceID: "gpu-2", Account: "acme"}),
		"another account": sign(ca, pki.Identity{DeviceID: "gpu-1", Account: "evil"}),
		"another CA":      sign(other, id),
		"another key":     unrelated.CertPEM,
	} {
		if err := c.install(certPEM, keyPEM); err == nil {
			t.Errorf("%s: installed", name)
		}
	}
	if got, _ := os.ReadFile(certPath); string(got) != string(first.CertPEM) || pki.Serial(c.Leaf()) != pki.Serial(first.Cert) {
		t.Fatal("a refused certificate replaced the first one")
	}

	good := sign(ca, id)
	if err := c.install(good, keyPEM); err != nil {
		t.Fatal(err)
	}
	served, err := c.TLS(&tls.Config{}).GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(served.Certificate[0])
	onDisk, _ := os.ReadFile(certPath)
	keyOnDisk, _ := os.ReadFile(keyPath)
	if pki.Serial(leaf) == pki.Serial(first.Cert) || string(onDisk) != string(good) || string(keyOnDisk) != string(keyPEM) {
		t.Fatal("the renewed certificate is not what the next handshake serves and the files hold")
	}
	if at := c.RenewAt(); at.Before(leaf.NotBefore.Add(39*time.Minute)) || at.After(leaf.NotAfter) {
		t.Fatalf("renewal due at %s for a certificate valid %s to %s: want two thirds in", at, leaf.NotBefore, leaf.NotAfter)
	}
}
