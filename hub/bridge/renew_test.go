package bridge_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
)

// enrollFiles issues and registers a device certificate and writes it into
// a hub directory, as si device enroll does.
func enrollFiles(t *testing.T, p *harness.PKI, s *store.Store, id pki.Identity, ttl time.Duration) (dir string, is pki.Issued) {
	t.Helper()
	harness.EnsureAccount(t, s, id.Account)
	is, err := p.CA.IssueDevice(id, nil, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterCert(context.Background(), id.DeviceID, id.Account, pki.Serial(is.Cert), is.Cert.NotAfter); err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	if err := is.Save(dir, p.CA.CertPEM); err != nil {
		t.Fatal(err)
	}
	return dir, is
}

func renewingAgent(t *testing.T, p *harness.PKI, addr, dir string, is pki.Issued) *agent.Agent {
	t.Helper()
	base, err := pki.ClientTLS(p.CA.CertPEM, is.CertPEM, is.KeyPEM, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := agent.NewCerts(p.CA.CertPEM, is.CertPEM, is.KeyPEM, filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return harness.StartAgent(t, agent.Options{Bridge: addr, TLS: base, Certs: certs})
}

// TestRenewalKeepsTheLinkUp: a hub whose certificate lives seconds renews
// it over the link again and again, with a key made on the hub, and stays
// on the same connection past the first certificate's expiry (the bridge
// re-checks every 100ms and drops expired certificates), answering
// escalations; the first certificate is revoked, so an attacker holding it
// (its key and all) is refused, and the renewed one is on disk.
func TestRenewalKeepsTheLinkUp(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	ttl := 12 * time.Second // renewed at 8 s: 4 s for the CA role to answer on a loaded machine
	// The CA role signs on its own queue; the bridge holds no CA key and
	// asks it through Temporal, as in production.
	w := workers.NewCA(m.Client, &activities.CA{CA: p.CA, Store: m.Store, TTL: ttl}, worker.Options{})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) {
		o.RecheckInterval = 100 * time.Millisecond
		o.Renewer = &bridge.Temporal{Client: m.Client}
	})
	id := pki.Identity{DeviceID: "gpu-renew", Account: "acme"}
	dir, first := enrollFiles(t, p, m.Store, id, ttl)
	a := renewingAgent(t, p, b.Addr().String(), dir, first)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	// Past the first certificate's expiry, and a renewed one's too.
	time.Sleep(time.Until(first.Cert.NotAfter) + ttl)
	st := a.Status()
	if !st.Connected || st.Sessions != 1 {
		t.Fatalf("link after renewals: connected %v, %d sessions (%s); want the one session kept up", st.Connected, st.Sessions, st.LastError)
	}
	_, out, err := a.Escalate(&meshv1.EscalationRequest{RequestId: "after-renewal", Prompt: "q [sim:agree]"})
	if err != nil {
		t.Fatal(err)
	}
	var last *meshv1.EscalationResponse
	for r := range out {
		last = r
	}
	if last.GetResult() == nil {
		t.Fatalf("escalation after renewal: %v", last)
	}
	if a.Status().Sessions != 1 {
		t.Fatalf("%d sessions: the link was not kept up", a.Status().Sessions)
	}

	// The attacker's side: the first certificate, with its key, is refused.
	if err := m.Store.CheckCert(context.Background(), id.DeviceID, id.Account, pki.Serial(first.Cert)); !errors.Is(err, store.ErrCertRefused) {
		t.Fatalf("first certificate after renewal: %v, want it revoked", err)
	}
	old, _ := pki.ClientTLS(p.CA.CertPEM, first.CertPEM, first.KeyPEM, "127.0.0.1")
	if err := handshake(b.Addr().String(), old); err == nil {
		t.Fatal("the replaced certificate still connects")
	}

	// On disk: a certificate other than the first, for the same device, whose key is new.
	certPEM, _ := os.ReadFile(filepath.Join(dir, pki.CertFile))
	keyPEM, _ := os.ReadFile(filepath.Join(dir, pki.KeyFile))
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("renewed files: %v", err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if got, _ := pki.IdentityOf(leaf); got != id || pki.Serial(leaf) == pki.Serial(first.Cert) || bytes.Equal(keyPEM, first.KeyPEM) {
		t.Fatalf("renewed files: identity %v serial %s (first %s), new key %v", got, pki.Serial(leaf), pki.Serial(first.Cert), !bytes.Equal(keyPEM, first.KeyPEM))
	}
	// A restarted hub connects with what it saved.
	saved, _ := pki.ClientTLS(p.CA.CertPEM, certPEM, keyPEM, "127.0.0.1")
	if err := handshake(b.Addr().String(), saved); err != nil {
		t.Fatalf("the renewed certificate is refused: %v", err)
	}

	// The running hub reconnects with its current certificate, not the one
	// (nor a TLS session resumed from the one) it started with.
	addr := b.Addr().String()
	b.Stop()
	b2 := harness.StartBridge(t, m, p, addr, func(o *bridge.Options) {
		o.RecheckInterval = 100 * time.Millisecond
		o.Renewer = &bridge.Temporal{Client: m.Client}
	})
	waitFor(t, 30*time.Second, "the hub to reconnect to the restarted bridge", func() bool { return a.Status().Sessions >= 2 && a.Status().Connected })
	_ = b2
}

// renewRaw sends csr on a renewal stream of conn and returns the answer.
func renewRaw(t *testing.T, conn *quic.Conn, csr []byte) (ok bool, body []byte, s *quic.Stream) {
	t.Helper()
	s, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = s.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := s.Write([]byte{bridge.StreamRenew}); err != nil {
		t.Fatal(err)
	}
	if err := bridge.WriteFrame(s, csr); err != nil {
		t.Fatal(err)
	}
	var st [1]byte
	if _, err := io.ReadFull(s, st[:]); err != nil {
		t.Fatal(err)
	}
	body, err = bridge.ReadFrame(s, bridge.MaxCertPEMBytes)
	if err != nil {
		t.Fatal(err)
	}
	return st[0] == bridge.RenewOK, body, s
}

// TestRenewalAttacks: what a hub asks for in its request never changes who
// the certificate is for; a request not signed by its key, a bridge
// without the CA role, and a renewal the hub never confirms are refused or
// leave the old certificate as it was.
func TestRenewalAttacks(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	ca := &activities.CA{CA: p.CA, Store: m.Store, TTL: time.Hour}
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.Renewer = ca })
	p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-victim", Account: "victim"}, time.Hour)
	me := pki.Identity{DeviceID: "gpu-mallory", Account: "acme"}
	// Due for renewal: 50 of its 60 minutes gone.
	mine, err := p.CA.IssueDevice(me, nil, time.Hour, time.Now().Add(-50*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	harness.EnsureAccount(t, m.Store, me.Account)
	if err := m.Store.RegisterCert(context.Background(), me.DeviceID, me.Account, pki.Serial(mine.Cert), mine.Cert.NotAfter); err != nil {
		t.Fatal(err)
	}
	tc, _ := pki.ClientTLS(p.CA.CertPEM, mine.CertPEM, mine.KeyPEM, "127.0.0.1")
	conn := dial(t, b.Addr().String(), tc)

	key, _ := pki.NewDeviceKey()
	t.Run("a fresh certificate renewed at once", func(t *testing.T) {
		fresh := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-eager", Account: "acme"}, time.Hour)
		csr, _ := pki.NewCSR(key)
		ok, body, s := renewRaw(t, dial(t, b.Addr().String(), fresh), csr)
		s.CancelRead(0)
		if ok || !bytes.Contains(body, []byte("too early")) {
			t.Fatalf("a renewal right after issue: ok %v, %q; want refused as too early", ok, body)
		}
	})
	t.Run("a request naming another device gets a certificate for its own", func(t *testing.T) {
		other, _ := url.Parse("si-mesh://victim/device/gpu-victim")
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: "gpu-victim", Organization: []string{"victim"}}, URIs: []*url.URL{other}}, key)
		if err != nil {
			t.Fatal(err)
		}
		ok, body, s := renewRaw(t, conn, csr)
		defer s.CancelRead(0)
		if !ok {
			t.Fatalf("refused: %s", body)
		}
		cert, err := bridge.ParseRenewedCert(body)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := pki.IdentityOf(cert); err != nil || got != me || len(cert.URIs) != 1 {
			t.Fatalf("renewed certificate speaks for %v (%v, URIs %v), want %v only", got, err, cert.URIs, me)
		}
		// Never confirmed: the certificate the connection holds stays valid.
		_ = s.Close()
	})
	t.Run("a request not signed by its key", func(t *testing.T) {
		csr, _ := pki.NewCSR(key)
		csr[len(csr)-3] ^= 0xff
		if ok, body, s := renewRaw(t, conn, csr); ok {
			t.Fatalf("accepted a forged request")
		} else {
			s.CancelRead(0)
			t.Logf("refused: %s", body)
		}
	})
	time.Sleep(200 * time.Millisecond)
	if err := m.Store.CheckCert(context.Background(), me.DeviceID, me.Account, pki.Serial(mine.Cert)); err != nil {
		t.Fatalf("an unconfirmed renewal revoked the certificate in use: %v", err)
	}

	t.Run("a bridge without the CA role", func(t *testing.T) {
		plain := harness.StartBridge(t, m, p, "127.0.0.1:0")
		c := dial(t, plain.Addr().String(), tc)
		csr, _ := pki.NewCSR(key)
		if ok, body, s := renewRaw(t, c, csr); ok {
			t.Fatal("a bridge without a renewer signed")
		} else {
			s.CancelRead(0)
			if !bytes.Contains(body, []byte("does not renew")) {
				t.Fatalf("reason %q does not say what to do", body)
			}
		}
	})
	t.Run("a revoked device", func(t *testing.T) {
		csr, _ := pki.NewCSR(key)
		if _, err := ca.RenewDevice(context.Background(), pki.Identity{DeviceID: "gpu-victim", Account: "acme"}, pki.Serial(mine.Cert), csr); err == nil {
			t.Fatal("the CA signed for a serial of another device")
		}
		if err := m.Store.RevokeDevice(context.Background(), me.DeviceID); err != nil {
			t.Fatal(err)
		}
		if _, err := ca.RenewDevice(context.Background(), me, pki.Serial(mine.Cert), csr); err == nil {
			t.Fatal("the CA renewed a revoked device")
		}
	})
}
