package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"

	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func TestCAAndIdentity(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := InitCA(dir, false, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitCA(dir, false, now); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("a second init must not replace the CA: %v", err)
	}
	if st, _ := os.Stat(filepath.Join(dir, CAKeyFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v", st.Mode())
	}
	loaded, err := LoadCA(dir)
	if err != nil || !loaded.Cert.Equal(ca.Cert) {
		t.Fatalf("load: %v", err)
	}
	is, err := ca.IssueDevice(Identity{DeviceID: "gpu1", Account: "acme"}, nil, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	id, err := IdentityOf(is.Cert)
	if err != nil || id != (Identity{DeviceID: "gpu1", Account: "acme"}) {
		t.Fatalf("identity %+v %v", id, err)
	}
	if is.Cert.NotAfter.Sub(now) > time.Hour+time.Minute {
		t.Fatalf("not after %v", is.Cert.NotAfter)
	}
	for _, bad := range []Identity{{"GPU!", "acme"}, {"gpu", ""}, {"", "acme"}} {
		if _, err := ca.IssueDevice(bad, nil, time.Hour, now); err == nil {
			t.Errorf("issued for %+v", bad)
		}
	}
	// Renewal keeps the key.
	dev := t.TempDir()
	if err := is.Save(dev, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	key, err := LoadKey(filepath.Join(dev, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := ca.IssueDevice(id, key, time.Hour, now.Add(time.Minute))
	if err != nil || Serial(renewed.Cert) == Serial(is.Cert) || !renewed.Cert.PublicKey.(*ecdsa.PublicKey).Equal(is.Cert.PublicKey) {
		t.Fatalf("renewal: %v", err)
	}
}

// TestSessionResumption checks that a hub reconnecting to the same bridge
// resumes its TLS session instead of a full handshake.
func TestSessionResumption(t *testing.T) {
	now := time.Now()
	ca, err := InitCA(t.TempDir(), false, now)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := ca.IssueServer([]string{"127.0.0.1"}, time.Hour, now)
	pair, _ := tls.X509KeyPair(srv.CertPEM, srv.KeyPEM)
	checked := 0
	sc, err := ServerTLS(ca.CertPEM, pair, func(context.Context, Identity, string) error { checked++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", sc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() { <-c.Context().Done() }()
		}
	}()
	dev, _ := ca.IssueDevice(Identity{DeviceID: "gpu1", Account: "acme"}, nil, time.Hour, now)
	cc, err := ClientTLS(ca.CertPEM, dev.CertPEM, dev.KeyPEM, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	var resumed []bool
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := quic.DialAddr(ctx, ln.Addr().String(), cc, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		resumed = append(resumed, c.ConnectionState().TLS.DidResume)
		if c.ConnectionState().TLS.NegotiatedProtocol != ALPN || c.ConnectionState().TLS.Version != tls.VersionTLS13 {
			t.Fatalf("negotiated %q %x", c.ConnectionState().TLS.NegotiatedProtocol, c.ConnectionState().TLS.Version)
		}
		time.Sleep(50 * time.Millisecond) // the session ticket arrives after the handshake
		_ = c.CloseWithError(0, "")
	}
	if resumed[0] || !resumed[1] || !resumed[2] {
		t.Fatalf("resumed %v, want [false true true]", resumed)
	}
	if checked == 0 {
		t.Fatal("the registry check never ran")
	}
}

func TestIdentityOfForeignCertificate(t *testing.T) {
	now := time.Now()
	ca, _ := InitCA(t.TempDir(), false, now)
	srv, _ := ca.IssueServer([]string{"example.com", "10.0.0.1"}, time.Hour, now)
	if _, err := IdentityOf(srv.Cert); err == nil {
		t.Fatal("a server certificate carries no device identity")
	}
	if len(srv.Cert.IPAddresses) != 1 || !srv.Cert.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) || srv.Cert.DNSNames[0] != "example.com" {
		t.Fatalf("SANs %v %v", srv.Cert.DNSNames, srv.Cert.IPAddresses)
	}
	if _, err := LoadCA(t.TempDir()); err == nil || !strings.Contains(err.Error(), "si ca init") {
		t.Fatalf("missing CA: %v", err)
	}
}
