package bridge_test

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// TestStatelessResetEndsADeadConnectionAtOnce: when the load balancer sends
// a hub's packets to another replica (its bridge died), that replica, which
// shares the stateless reset key (derived from the same server key), ends
// the connection at the hub's next packet instead of leaving it to the idle
// timeout. A replica with another key cannot (the control).
func TestStatelessResetEndsADeadConnectionAtOnce(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	first := harness.StartBridge(t, m, p, "127.0.0.1:0")
	same := harness.StartBridge(t, m, p, "127.0.0.1:0")
	var otherKey quic.StatelessResetKey
	_, _ = rand.Read(otherKey[:])
	other := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.StatelessResetKey = &otherKey })
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-reset", Account: "acme"}, time.Hour)

	for _, tc := range []struct {
		name    string
		replica string
		reset   bool
	}{{"replica with the shared key", same.Addr().String(), true}, {"replica with another key", other.Addr().String(), false}} {
		t.Run(tc.name, func(t *testing.T) {
			lb := harness.StartBalancer(t, first.Addr().String())
			conn := dial(t, lb.Addr(), c) // keep-alive every second
			if r := escalateRaw(t, conn, &meshv1.EscalationRequest{RequestId: "reset-" + tc.name[:7] + "-" + tc.name[len(tc.name)-3:], Prompt: "q [sim:agree]"}); r.GetResult() == nil {
				t.Fatalf("escalation: %v", r)
			}
			lb.To(t, tc.replica)
			switched := time.Now()
			// A hub's next heartbeat: quic-go answers only packets larger than
			// a stateless reset (a bare keep-alive PING is not).
			s, err := conn.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			_, _ = s.Write(make([]byte, 200))
			select {
			case <-conn.Context().Done():
				var sr *quic.StatelessResetError
				if !tc.reset {
					t.Fatalf("ended with %v without the shared key", context.Cause(conn.Context()))
				}
				if !errors.As(context.Cause(conn.Context()), &sr) {
					t.Fatalf("ended with %v, want a stateless reset", context.Cause(conn.Context()))
				}
				if took := time.Since(switched); took > 3*time.Second {
					t.Fatalf("reset after %s", took)
				}
			case <-time.After(4 * time.Second):
				if tc.reset {
					t.Fatal("the connection outlived its bridge: no stateless reset from the replica")
				}
			}
		})
	}
}

// TestMissingHeartbeatAckRedialsTheNextBridge: a bridge that vanishes
// without a word (its packets blackholed) is noticed within a heartbeat
// interval's wait, not QUIC's 20 s idle timeout, and the hub is back on the
// next --bridge address within a few seconds; an escalation in flight
// finishes there once.
func TestMissingHeartbeatAckRedialsTheNextBridge(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 300 * time.Millisecond})
	p := harness.NewPKI(t)
	first := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.NoTCP = true })
	second := harness.StartBridge(t, m, p, "127.0.0.1:0")
	lb := harness.StartBalancer(t, first.Addr().String())
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-failover", Account: "acme"}, time.Hour)
	a := harness.StartAgent(t, agent.Options{Bridge: lb.Addr() + "," + second.Addr().String(), TLS: c, QUICTimeout: 500 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a smoothed RTT", func() bool { return a.Status().SmoothedRTT > 0 })
	if st := a.Status(); st.Bridge != lb.Addr() {
		t.Fatalf("status %+v", st)
	}
	_, out, err := a.Escalate(&meshv1.EscalationRequest{RequestId: "failover", Prompt: "q [sim:disagree]", MaxRounds: 3})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	lb.Blackhole(true)
	killed := time.Now()
	waitFor(t, 2500*time.Millisecond, "the hub to notice the dead bridge", func() bool { return !a.Status().Connected })
	noticed := time.Since(killed)
	waitFor(t, 5*time.Second, "the hub on the next bridge", func() bool {
		st := a.Status()
		return st.Connected && st.Bridge == second.Addr().String()
	})
	t.Logf("noticed after %s, back after %s", noticed.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if r := result(t, out); r.GetStatus() != workflows.StatusArbiter {
		t.Fatalf("result %v", r)
	}
	if took := time.Since(killed); took > 30*time.Second {
		t.Fatalf("the escalation finished %s after the bridge died", took)
	}
}
