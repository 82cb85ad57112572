package bridge_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/hub/wire"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
)

// enrollingBridge is a bridge that takes enrollments, signed by an
// in-process CA role (TestEnrollThroughTheCARole covers Temporal's).
func enrollingBridge(t *testing.T, m *harness.Mesh, p *harness.PKI, mods ...func(*bridge.Options)) *harness.RunningBridge {
	t.Helper()
	return harness.StartBridge(t, m, p, "127.0.0.1:0", append([]func(*bridge.Options){func(o *bridge.Options) {
		o.Enroller = &activities.CA{CA: p.CA, Store: m.Store, TTL: time.Hour}
		o.EnrollCA = p.CA.CertPEM
		o.EnrollPerMinute = 1000
	}}, mods...)...)
}

// newToken issues a one-time token for device in account, as si device
// enroll --token-only does.
func newToken(t *testing.T, m *harness.Mesh, p *harness.PKI, account, device string, ttl time.Duration) pki.EnrollToken {
	t.Helper()
	harness.EnsureAccount(t, m.Store, account)
	secret, _, err := m.Store.CreateEnrollmentToken(context.Background(), account, device, ttl)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := pki.CAFingerprint(p.CA.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pki.EnrollToken{Secret: secret, CA: sum}
}

func enrollAt(addr string, tok pki.EnrollToken, device, dir string, mods ...func(*agent.EnrollOptions)) (agent.Enrolled, error) {
	o := agent.EnrollOptions{Bridge: addr, Token: tok, DeviceID: device, Dir: dir, Wait: 3 * time.Second}
	for _, mod := range mods {
		mod(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return agent.Enroll(ctx, o)
}

// enrollCount is the bridge's si_bridge_enrollments_total for outcome.
func enrollCount(t *testing.T, b *harness.RunningBridge, outcome string) float64 {
	t.Helper()
	mfs, err := b.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "si_bridge_enrollments_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return mt.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// hubWith runs an agent with the files enrollment wrote, as si hub does.
func hubWith(t *testing.T, addr string, e agent.Enrolled) *agent.Agent {
	t.Helper()
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tc, err := pki.ClientTLS(read(e.CA), read(e.Cert), read(e.Key), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return harness.StartAgent(t, agent.Options{Bridge: addr, TLS: tc})
}

// TestEnrollWithATokenAndConnect: a hub with nothing but a token enrolls
// (its key made here, 0600), connects with what it wrote, and, run again,
// keeps its certificate without asking the bridge (an init container's
// restart needs no new token).
func TestEnrollWithATokenAndConnect(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := enrollingBridge(t, m, p)
	tok := newToken(t, m, p, "acme", "gpu-new", time.Hour)
	dir := filepath.Join(t.TempDir(), "gpu-new")
	e, err := enrollAt(b.Addr().String(), tok, "gpu-new", dir)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if e.Account != "acme" || e.Already || e.NotAfter.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("enrolled %+v", e)
	}
	if fi, err := os.Stat(e.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v %v", fi.Mode(), err)
	}
	a := hubWith(t, b.Addr().String(), e)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatalf("the enrolled hub does not connect: %v (%s)", err, a.Status().LastError)
	}
	if acct, err := m.Store.DeviceAccount(ctx, "gpu-new"); err != nil || acct != "acme" {
		t.Fatalf("gpu-new is enrolled to %q: %v", acct, err)
	}
	if n := enrollCount(t, b, "enrolled"); n != 1 {
		t.Fatalf("enrollments counted: %v", n)
	}
	b.Stop()
	again, err := enrollAt(b.Addr().String(), tok, "gpu-new", dir)
	if err != nil || !again.Already {
		t.Fatalf("enrolling again with a valid certificate in place: %+v %v", again, err)
	}
}

// TestEnrollRefusals: a spent, expired or unknown token, or one issued for
// another device, enrolls nothing and says why; a refused try leaves no
// files and does not spend the token.
func TestEnrollRefusals(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := enrollingBridge(t, m, p)
	addr := b.Addr().String()

	spent := newToken(t, m, p, "acme", "gpu-spent", time.Hour)
	if _, err := enrollAt(addr, spent, "gpu-spent", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	expired := newToken(t, m, p, "acme", "gpu-late", time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	unknown := spent
	unknown.Secret = "si_enroll_" + strings.Repeat("A", 43)
	theirs := newToken(t, m, p, "acme", "gpu-theirs", time.Hour)

	for _, tc := range []struct {
		name, device string
		tok          pki.EnrollToken
		want         string
	}{
		{"spent", "gpu-spent", spent, "the token was used"},
		{"expired", "gpu-late", expired, "the token expired"},
		{"unknown", "gpu-x", unknown, "unknown token"},
		{"another device's", "gpu-mine", theirs, "the token enrolls device gpu-theirs, not gpu-mine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), tc.device)
			start := time.Now()
			_, err := enrollAt(addr, tc.tok, tc.device, dir)
			var re *bridge.EnrollRefusedError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a refusal saying %q", err, tc.want)
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("a refusal was retried for %s", time.Since(start))
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("a refused enrollment left %s: %v", dir, err)
			}
		})
	}
	if _, err := enrollAt(addr, theirs, "gpu-theirs", t.TempDir()); err != nil {
		t.Fatalf("the token another device tried is spent: %v", err)
	}
}

// TestEnrollPinsTheTokensCA: a hub checks the bridge against the CA its
// token names before it sends the token: a bridge of another CA (a
// man in the middle with a certificate of its own) never sees the secret,
// and the token still works at the right bridge.
func TestEnrollPinsTheTokensCA(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	good := enrollingBridge(t, m, p)
	evil := harness.NewPKI(t)
	impostor := enrollingBridge(t, m, evil)
	tok := newToken(t, m, p, "acme", "gpu-pinned", time.Hour)
	_, err := enrollAt(impostor.Addr().String(), tok, "gpu-pinned", t.TempDir())
	if !errors.Is(err, pki.ErrCAMismatch) || !strings.Contains(err.Error(), "the bridge's CA is not the one this token names") {
		t.Fatalf("enrolling at another CA's bridge: %v", err)
	}
	if n := enrollCount(t, impostor, "refused") + enrollCount(t, impostor, "enrolled"); n != 0 {
		t.Fatalf("the impostor received %v requests", n)
	}
	// The same over the TCP fallback.
	if _, err := enrollAt(impostor.Addr().String(), tok, "gpu-pinned", t.TempDir(), func(o *agent.EnrollOptions) { o.Protocol = agent.ProtocolTCP }); !errors.Is(err, pki.ErrCAMismatch) {
		t.Fatalf("enrolling at another CA's bridge over TCP: %v", err)
	}
	if _, err := enrollAt(good.Addr().String(), tok, "gpu-pinned", t.TempDir()); err != nil {
		t.Fatalf("the token after the impostor: %v", err)
	}
}

// TestEnrollOverTCP: where UDP is blocked a hub enrolls over the TCP
// fallback, on the same port.
func TestEnrollOverTCP(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := enrollingBridge(t, m, p)
	tok := newToken(t, m, p, "acme", "gpu-tcp", time.Hour)
	if _, err := enrollAt(b.TCPAddr().String(), tok, "gpu-tcp", t.TempDir(), func(o *agent.EnrollOptions) { o.Protocol = agent.ProtocolTCP }); err != nil {
		t.Fatal(err)
	}
}

// TestBridgeWithoutEnrollment: a bridge not configured for enrollment
// fails the handshake of a hub that offers only the enrollment ALPN, and
// the hub says so.
func TestBridgeWithoutEnrollment(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	tok := newToken(t, m, p, "acme", "gpu-nowhere", time.Hour)
	_, err := enrollAt(b.Addr().String(), tok, "gpu-nowhere", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "does not take enrollments") {
		t.Fatalf("got %v", err)
	}
}

// enrollClient is a raw client of the enrollment ALPN with no certificate.
func enrollClient(p *harness.PKI) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.CA.CertPEM)
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{pki.EnrollALPN}}
}

// TestEnrollConnectionDoesNothingElse: a connection made with the
// enrollment ALPN (no certificate) that opens any other stream kind (a
// control stream's hello, an escalation, a renewal, the Temporal proxy) is
// closed, and no hub is registered; a client that offers both ALPNs
// without a certificate is an enrollment connection too; every client the
// bridge refuses is still refused with enrollment on.
func TestEnrollConnectionDoesNothingElse(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := enrollingBridge(t, m, p)
	addr := b.Addr().String()
	for _, kind := range []byte{bridge.StreamControl, bridge.StreamEscalation, bridge.StreamRenew, bridge.StreamTemporal, 'X'} {
		conn := dial(t, addr, enrollClient(p))
		if got := conn.ConnectionState().TLS.NegotiatedProtocol; got != pki.EnrollALPN {
			t.Fatalf("negotiated %q", got)
		}
		s, err := conn.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = s.Write([]byte{kind})
		switch kind {
		case bridge.StreamControl:
			_ = wire.Write(s, &meshv1.HubMessage{Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{DeviceId: "gpu-sneak"}}})
		case bridge.StreamEscalation:
			_ = wire.Write(s, &meshv1.EscalationRequest{RequestId: "r1", Prompt: "hi", Project: "p"})
		}
		ae := closedWith(t, conn, 5*time.Second)
		if ae.ErrorCode != bridge.CodeProtocol || !strings.Contains(ae.ErrorMessage, "only enrolls") {
			t.Fatalf("stream kind %q: closed with %d %q", kind, ae.ErrorCode, ae.ErrorMessage)
		}
	}
	// The same over the TCP fallback.
	for _, kind := range []byte{bridge.StreamControl, bridge.StreamTemporal} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := bridge.DialTCP(ctx, b.TCPAddr().String(), enrollClient(p))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		s, err := c.OpenStreamSync(ctx)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		_, _ = s.Write([]byte{kind})
		select {
		case <-c.Context().Done():
		case <-ctx.Done():
			t.Fatalf("TCP, stream kind %q: still connected", kind)
		}
		cancel()
		var ae *quic.ApplicationError
		if cause := context.Cause(c.Context()); !errors.As(cause, &ae) || ae.ErrorCode != bridge.CodeProtocol || !strings.Contains(ae.ErrorMessage, "only enrolls") {
			t.Fatalf("TCP, stream kind %q: closed with %v", kind, cause)
		}
	}
	hubs, err := m.Store.Hubs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(hubs) != 0 {
		t.Fatalf("an enrollment connection registered hubs: %+v", hubs)
	}
	if _, err := m.Store.DeviceAccount(context.Background(), "gpu-sneak"); err == nil {
		t.Fatal("gpu-sneak is a device")
	}
	_, refused := strangers(t, m, p, "gpu-enr")
	both := enrollClient(p)
	both.NextProtos = []string{pki.ALPN, pki.EnrollALPN}
	refused["no certificate, both ALPNs"] = both
	for name, c := range refused {
		if err := handshake(addr, c); err == nil {
			t.Errorf("%s: accepted on a bridge that enrolls", name)
		}
	}
}

// rawEnroll sends body on an enrollment connection's stream and returns the
// bridge's answer.
func rawEnroll(t *testing.T, addr string, p *harness.PKI, body []byte) (certPEM []byte, err error) {
	t.Helper()
	conn := dial(t, addr, enrollClient(p))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(body); err != nil {
		t.Fatal(err)
	}
	certPEM, _, err = bridge.ReadEnrollAnswer(s)
	return certPEM, err
}

// TestEnrollBoundsTheRequest: an oversized frame is refused before it is
// read, a garbage certificate request or secret is refused with the reason,
// and the bridge enrolls the next good request.
func TestEnrollBoundsTheRequest(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := enrollingBridge(t, m, p)
	addr := b.Addr().String()
	tok := newToken(t, m, p, "acme", "gpu-bounds", time.Hour)
	key, _ := pki.NewDeviceKey()
	csr, _ := pki.NewCSR(key)
	frames := func(parts ...[]byte) []byte {
		var buf bytes.Buffer
		buf.WriteByte(bridge.StreamEnroll)
		for _, f := range parts {
			if err := bridge.WriteFrame(&buf, f); err != nil {
				t.Fatal(err)
			}
		}
		return buf.Bytes()
	}
	huge := append([]byte{bridge.StreamEnroll, 0xff, 0xff}, make([]byte, 1<<10)...)
	for _, tc := range []struct {
		name string
		body []byte
		want string
	}{
		{"oversized secret frame", huge, "frame of 65535 bytes"},
		{"secret with spaces", frames([]byte("si_enroll_ x"), []byte("gpu-bounds"), csr), "enrollment secret"},
		{"bad device id", frames([]byte(tok.Secret), []byte("GPU/../x"), csr), "device id"},
		{"garbage CSR", frames([]byte(tok.Secret), []byte("gpu-bounds"), []byte("not a certificate request")), "certificate request"},
		{"oversized CSR", frames([]byte(tok.Secret), []byte("gpu-bounds"), make([]byte, pki.MaxCSRBytes+1)), "frame of 4097 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rawEnroll(t, addr, p, tc.body)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	certPEM, err := rawEnroll(t, addr, p, frames([]byte(tok.Secret), []byte("gpu-bounds"), csr))
	if err != nil || len(certPEM) == 0 {
		t.Fatalf("a good request after the bad ones: %v", err)
	}
}

// TestEnrollFloodIsRateLimited: past its attempts a minute, a source's
// enrollment connections are closed before any request is read.
func TestEnrollFloodIsRateLimited(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := enrollingBridge(t, m, p, func(o *bridge.Options) { o.EnrollPerMinute = 3 })
	addr := b.Addr().String()
	tok := newToken(t, m, p, "acme", "gpu-flood", time.Hour)
	guess := tok
	for i := range 3 {
		guess.Secret = "si_enroll_guess" + string(rune('a'+i))
		if _, err := enrollAt(addr, guess, "gpu-flood", t.TempDir()); err == nil || !strings.Contains(err.Error(), "unknown token") {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	// Refused each time it asks within the wait; the error is the bridge's
	// refusal, even when the wait ends in the middle of a later attempt.
	_, err := enrollAt(addr, tok, "gpu-flood", t.TempDir(), func(o *agent.EnrollOptions) { o.Wait = 3 * time.Second })
	if err == nil || !strings.Contains(err.Error(), "enrollment attempts a minute") {
		t.Fatalf("the fourth attempt in a minute: %v", err)
	}
	if n := enrollCount(t, b, "limited"); n < 1 {
		t.Fatalf("limited attempts counted: %v", n)
	}
	if err := m.Store.CheckEnrollmentToken(context.Background(), store.EnrollTokenHash(tok.Secret), "gpu-flood", bytes.Repeat([]byte{1}, 32)); err != nil {
		t.Fatalf("the limited attempt touched the token: %v", err)
	}
}

// TestEnrollThroughTheCARole: the bridge holds no CA key; it starts an
// EnrollWorkflow and the CA role's worker, on its own queue, signs.
func TestEnrollThroughTheCARole(t *testing.T) {
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
	tok := newToken(t, m, p, "acme", "gpu-ca-role", time.Hour)
	e, err := enrollAt(b.Addr().String(), tok, "gpu-ca-role", t.TempDir(), func(o *agent.EnrollOptions) { o.Wait = 30 * time.Second })
	if err != nil {
		t.Fatal(err)
	}
	a := hubWith(t, b.Addr().String(), e)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatalf("the enrolled hub does not connect: %v", err)
	}
	// The workflow's input holds the token's hash, never the token.
	tok2 := newToken(t, m, p, "acme", "gpu-ca-role2", time.Hour)
	key, _ := pki.NewDeviceKey()
	csr, _ := pki.NewCSR(key)
	var body bytes.Buffer
	if err := bridge.WriteEnrollRequest(&body, bridge.EnrollRequest{Secret: tok2.Secret, DeviceID: "gpu-ca-role2", CSR: csr}); err != nil {
		t.Fatal(err)
	}
	if _, err := rawEnroll(t, b.Addr().String(), p, body.Bytes()); err != nil {
		t.Fatal(err)
	}
	hash, sum := store.EnrollTokenHash(tok2.Secret), sha256.Sum256(csr)
	it := m.Client.GetWorkflowHistory(ctx, "enroll-gpu-ca-role2:"+hex.EncodeToString(hash[:8])+":"+hex.EncodeToString(sum[:8]), "", false, 0)
	events := 0
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		events++
		if strings.Contains(ev.String(), tok2.Secret) {
			t.Fatal("the enrollment token is in the workflow's history")
		}
	}
	if events == 0 {
		t.Fatal("no EnrollWorkflow history")
	}
}

// TestEnrollIdleStrangersHoldNoSlot: strangers with no token who open
// enrollment connections and send nothing take none of the CA role's
// slots: with four slots and four idle connections open, a hub with a
// valid token still enrolls.
func TestEnrollIdleStrangersHoldNoSlot(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := enrollingBridge(t, m, p, func(o *bridge.Options) { o.EnrollConcurrent = 4 })
	addr := b.Addr().String()
	for range 4 {
		conn := dial(t, addr, enrollClient(p))
		if got := conn.ConnectionState().TLS.NegotiatedProtocol; got != pki.EnrollALPN {
			t.Fatalf("negotiated %q", got)
		}
	}
	time.Sleep(200 * time.Millisecond)
	tok := newToken(t, m, p, "acme", "gpu-fifth", time.Hour)
	if _, err := enrollAt(addr, tok, "gpu-fifth", t.TempDir(), func(o *agent.EnrollOptions) { o.Wait = time.Second }); err != nil {
		t.Fatalf("a hub with a valid token behind four idle strangers: %v", err)
	}
}

// TestEnrollRepeatGetsTheSameCertificate: a hub whose answer was lost asks
// the bridge again with the same token and key and gets the certificate the
// CA committed; a second hub with the token and another key is refused.
func TestEnrollRepeatGetsTheSameCertificate(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := enrollingBridge(t, m, p)
	addr := b.Addr().String()
	tok := newToken(t, m, p, "acme", "gpu-again", time.Hour)
	key, _ := pki.NewDeviceKey()
	request := func(k crypto.Signer) []byte {
		csr, err := pki.NewCSR(k)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		if err := bridge.WriteEnrollRequest(&body, bridge.EnrollRequest{Secret: tok.Secret, DeviceID: "gpu-again", CSR: csr}); err != nil {
			t.Fatal(err)
		}
		return body.Bytes()
	}
	first, err := rawEnroll(t, addr, p, request(key))
	if err != nil {
		t.Fatal(err)
	}
	again, err := rawEnroll(t, addr, p, request(key))
	if err != nil || !bytes.Equal(again, first) {
		t.Fatalf("the same hub asking again: %v (same certificate %v)", err, bytes.Equal(again, first))
	}
	other, _ := pki.NewDeviceKey()
	if _, err := rawEnroll(t, addr, p, request(other)); err == nil || !strings.Contains(err.Error(), "was used") {
		t.Fatalf("a second hub with another key: %v", err)
	}
}
