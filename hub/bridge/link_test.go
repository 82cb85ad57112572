package bridge_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/hub/wire"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// handshakeTCP dials the bridge's TCP fallback with c, says hello and
// reports the first error: the attacker's view of the TCP listener.
func handshakeTCP(addr string, c *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := bridge.DialTCP(ctx, addr, c)
	if err != nil {
		return err
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Write([]byte{bridge.StreamControl}); err != nil {
		return err
	}
	if err := wire.Write(s, &meshv1.HubMessage{Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{}}}); err != nil {
		return err
	}
	var ack meshv1.BridgeMessage
	if err := wire.NewReader(s).Read(&ack); err != nil {
		return err
	}
	if ack.GetHelloAck() == nil {
		return errors.New("no hello ack")
	}
	return nil
}

// TestTCPFallbackMutualTLS: the TCP listener refuses whatever QUIC refuses:
// no certificate, another CA's, an expired, a revoked or an unregistered
// one, and TLS 1.2. A raw TLS client (not the agent's dialer, which forces
// TLS 1.3) tries the downgrade.
func TestTCPFallbackMutualTLS(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	if b.TCPAddr() == nil {
		t.Fatal("the bridge has no TCP listener")
	}
	addr := b.TCPAddr().String()
	if want := b.Addr().(interface{ String() string }).String(); addr != want {
		t.Fatalf("TCP listens on %s, UDP on %s: want the same port", addr, want)
	}
	good, refused := strangers(t, m, p, "gpu-tcp")
	noALPN := good.Clone()
	noALPN.NextProtos = nil
	refused["no ALPN"] = noALPN
	for name, c := range refused {
		// Clones share the good client's session cache: a ticket from one
		// case would let the next resume as that client.
		c.ClientSessionCache = nil
		if err := handshakeTCP(addr, c); err == nil {
			t.Errorf("%s: accepted over TCP", name)
		}
	}
	// TLS 1.2 from a client that is not the agent.
	tls12 := good.Clone()
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if tc, err := tls.Dial("tcp", addr, tls12); err == nil {
		_ = tc.SetDeadline(time.Now().Add(3 * time.Second))
		_, err = tc.Write([]byte{bridge.StreamControl})
		if err == nil {
			_, err = tc.Read(make([]byte, 1))
		}
		_ = tc.Close()
		if err == nil {
			t.Error("TLS 1.2: accepted over TCP")
		}
	}
	if err := handshakeTCP(addr, good); err != nil {
		t.Fatalf("valid certificate refused over TCP: %v", err)
	}
}

// TestTCPFallbackRevokedWhileConnected: the re-check drops a TCP link as it
// does a QUIC one, and the hub learns why.
func TestTCPFallbackRevokedWhileConnected(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.RecheckInterval = 100 * time.Millisecond })
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-tcp-stolen", Account: "acme"}, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bridge.DialTCP(ctx, b.TCPAddr().String(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	if r := escalateOn(t, conn, &meshv1.EscalationRequest{RequestId: "tcp-before", Prompt: "q [sim:agree]"}); r.GetResult() == nil {
		t.Fatalf("escalation over TCP before revocation: %v", r)
	}
	if err := m.Store.RevokeDevice(ctx, "gpu-tcp-stolen"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a revoked device's TCP link is still open")
	}
	var ae *quic.ApplicationError
	if !errors.As(context.Cause(conn.Context()), &ae) || !ae.Remote || ae.ErrorCode != bridge.CodeRevoked {
		t.Fatalf("TCP link ended with %v, want the bridge's CodeRevoked", context.Cause(conn.Context()))
	}
	// Its session ticket from before the revocation does not bring it back:
	// the check runs on resumed handshakes too.
	if err := handshakeTCP(b.TCPAddr().String(), c); err == nil {
		t.Fatal("a revoked device got back in over TCP (session resumption)")
	}
}

// escalateOn runs one escalation on its own stream of conn and returns the last response.
func escalateOn(t *testing.T, conn bridge.Conn, req *meshv1.EscalationRequest) *meshv1.EscalationResponse {
	t.Helper()
	s, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte{bridge.StreamEscalation}); err != nil {
		t.Fatal(err)
	}
	if err := wire.Write(s, req); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	_ = s.SetReadDeadline(time.Now().Add(time.Minute))
	r := wire.NewReader(s)
	for {
		var resp meshv1.EscalationResponse
		if err := r.Read(&resp); err != nil {
			t.Fatalf("escalation %s: %v", req.GetRequestId(), err)
		}
		if resp.GetProgress() == nil {
			return &resp
		}
	}
}

// netnsEnv names the network namespace the fallback test runs in.
const netnsEnv = "SI_TEST_NETNS"

// TestUDPBlockedFallsBackToTCP runs itself again inside a network namespace
// of its own, where nftables drops the bridge's UDP port: the hub connects
// over TCP, an escalation started there finishes after the hub returns to
// QUIC once UDP is allowed again, and it ran once.
func TestUDPBlockedFallsBackToTCP(t *testing.T) {
	ns := os.Getenv(netnsEnv)
	if ns == "" {
		if os.Geteuid() != 0 {
			t.Skip("needs root for a network namespace and nftables (ip netns add, nft)")
		}
		for _, tool := range []string{"ip", "nft"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("needs %s (apt-get install iproute2 nftables): %v", tool, err)
			}
		}
		ns = fmt.Sprintf("si-fallback-%d", os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("lo up: %v: %s", err, out)
		}
		args := []string{"netns", "exec", ns, os.Args[0], "-test.run", "^TestUDPBlockedFallsBackToTCP$", "-test.v", "-test.count=1"}
		cmd := exec.Command("ip", args...)
		cmd.Env = append(os.Environ(), netnsEnv+"="+ns)
		out, err := cmd.CombinedOutput()
		t.Logf("in namespace %s:\n%s", ns, out)
		if err != nil || !strings.Contains(string(out), "--- PASS: TestUDPBlockedFallsBackToTCP") {
			t.Fatalf("inside the namespace: %v", err)
		}
		return
	}

	m := harness.StartMesh(t, simulator.Options{Latency: 300 * time.Millisecond})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	port := b.Addr().(interface{ String() string }).String()
	port = port[strings.LastIndex(port, ":")+1:]
	nft := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("nft", args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	nft("add", "table", "inet", "si")
	nft("add", "chain", "inet", "si", "out", "{ type filter hook output priority 0 ; }")
	nft("add", "rule", "inet", "si", "out", "udp", "dport", port, "drop")

	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-noudp", Account: "acme"}, time.Hour)
	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: c, QUICTimeout: 500 * time.Millisecond, QUICRetry: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatalf("no link with UDP blocked: %v (%s)", err, a.Status().LastError)
	}
	if st := a.Status(); st.Transport != "tcp" {
		t.Fatalf("connected over %q with UDP blocked", st.Transport)
	}
	_, out, err := a.Escalate(&meshv1.EscalationRequest{RequestId: "across", Prompt: "q [sim:disagree]", MaxRounds: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.RecordUsage(&meshv1.UsageRecord{EventId: "u-tcp", Project: "p", Model: "m", PromptTokens: 10, AtUnixNano: time.Now().UnixNano()}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the escalation is running over TCP
	nft("flush", "chain", "inet", "si", "out")
	waitFor(t, 10*time.Second, "the hub back on QUIC", func() bool { st := a.Status(); return st.Connected && st.Transport == "quic" })
	if r := result(t, out); r.GetStatus() != workflows.StatusArbiter {
		t.Fatalf("result %v", r)
	}
	waitFor(t, 5*time.Second, "usage delivered", func() bool { return a.Status().QueuedUsage == 0 })
	if n, err := m.Store.HubUsageCount(ctx, "gpu-noudp"); err != nil || n != 1 {
		t.Fatalf("usage records stored %d, want 1: %v", n, err)
	}
	resp, err := m.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: "WorkflowId = 'escalation-gpu-noudp:across'"})
	if err != nil || len(resp.GetExecutions()) != 1 {
		t.Fatalf("the escalation ran %d times: %v", len(resp.GetExecutions()), err)
	}
	if got := b.Metrics(); got == nil {
		t.Fatal("no metrics")
	}
}
