package bridge_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

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
	"github.com/superinstance/mesh/workflows"
)

func TestMain(m *testing.M) { harness.Main(m) }

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// handshake dials the bridge with c and reports the handshake's error.
func handshake(addr string, c *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, c, &quic.Config{HandshakeIdleTimeout: 3 * time.Second})
	if err != nil {
		return err
	}
	defer conn.CloseWithError(0, "")
	// A server that refuses the client's certificate after TLS 1.3's
	// handshake finishes on the client side closes the connection at once.
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	if _, err := s.Write([]byte{bridge.StreamControl}); err != nil {
		return err
	}
	if err := wire.Write(s, &meshv1.HubMessage{Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{}}}); err != nil {
		return err
	}
	var ack meshv1.BridgeMessage
	return wire.NewReader(s).Read(&ack)
}

func TestMutualTLS(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	addr := b.Addr().String()
	good, refused := strangers(t, m, p, "gpu")
	tls12 := good.Clone()
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	refused["TLS 1.2"] = tls12
	for name, c := range refused {
		if err := handshake(addr, c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := handshake(addr, good); err != nil {
		t.Fatalf("valid certificate refused: %v", err)
	}
}

// strangers enrolls a good client (prefix-ok) and makes the clients a
// bridge must refuse, by what is wrong with them: no certificate, another
// CA's, an expired, a revoked or an unregistered one, a wrong ALPN.
func strangers(t *testing.T, m *harness.Mesh, p *harness.PKI, prefix string) (good *tls.Config, refused map[string]*tls.Config) {
	t.Helper()
	ctx := context.Background()
	good = p.Enroll(t, m.Store, pki.Identity{DeviceID: prefix + "-ok", Account: "acme"}, time.Hour)
	foreign := harness.NewPKI(t).Enroll(t, harness.Store(t), pki.Identity{DeviceID: prefix + "-foreign", Account: "acme"}, time.Hour)
	foreign.RootCAs = good.RootCAs // it trusts our bridge, but its certificate is from another CA
	expiredIs, err := p.CA.IssueDevice(pki.Identity{DeviceID: prefix + "-old", Account: "acme"}, nil, time.Minute, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Store.RegisterCert(ctx, prefix+"-old", "acme", pki.Serial(expiredIs.Cert), expiredIs.Cert.NotAfter); err != nil {
		t.Fatal(err)
	}
	expired, _ := pki.ClientTLS(p.CA.CertPEM, expiredIs.CertPEM, expiredIs.KeyPEM, "127.0.0.1")
	revoked := p.Enroll(t, m.Store, pki.Identity{DeviceID: prefix + "-revoked", Account: "acme"}, time.Hour)
	if err := m.Store.RevokeDevice(ctx, prefix+"-revoked"); err != nil {
		t.Fatal(err)
	}
	unregisteredIs, _ := p.CA.IssueDevice(pki.Identity{DeviceID: prefix + "-unknown", Account: "acme"}, nil, time.Hour, time.Now())
	unregistered, _ := pki.ClientTLS(p.CA.CertPEM, unregisteredIs.CertPEM, unregisteredIs.KeyPEM, "127.0.0.1")
	noCert := good.Clone()
	noCert.Certificates = nil
	wrongALPN := good.Clone()
	wrongALPN.NextProtos = []string{"h3"}
	return good, map[string]*tls.Config{"no client certificate": noCert, "another CA": foreign, "expired": expired,
		"revoked": revoked, "not registered": unregistered, "wrong ALPN": wrongALPN}
}

func TestRevokedWhileConnectedIsDropped(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.RecheckInterval = 100 * time.Millisecond })
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-stolen", Account: "acme"}, time.Hour)
	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: c})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Store.RevokeDevice(ctx, "gpu-stolen"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the revoked hub to be dropped", func() bool { return !a.Status().Connected })
	time.Sleep(time.Second) // its reconnection attempts are refused at the handshake
	if a.Status().Connected {
		t.Fatal("a revoked device got back in")
	}
}

func TestDeviceIDComesFromCertificate(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-a", Account: "acme"}, time.Hour)
	p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-b", Account: "globex"}, time.Hour)

	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: c, DeviceID: "gpu-b", Vitals: harness.FixedVitals(40, 50)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "gpu-a's heartbeat", func() bool {
		h, err := m.Store.HubByID(ctx, "gpu-a")
		return err == nil && h.GPUCount == 1
	})
	if _, err := m.Store.HubByID(ctx, "gpu-b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a hello claiming gpu-b registered it: %v", err)
	}
	_, out, err := a.Escalate(&meshv1.EscalationRequest{RequestId: "claim-1", Prompt: "q [sim:agree]", Project: "p"})
	if err != nil {
		t.Fatal(err)
	}
	res := result(t, out)
	run, err := m.Store.ConsensusRun(ctx, res.GetWorkflowId())
	if err != nil || run.Account != "acme" || res.GetWorkflowId() != "escalation-gpu-a:claim-1" {
		t.Fatalf("escalation billed to %q as %s: %v", run.Account, res.GetWorkflowId(), err)
	}
}

func result(t *testing.T, out <-chan *meshv1.EscalationResponse) *meshv1.EscalationResult {
	t.Helper()
	timeout := time.After(time.Minute)
	var steps []string
	for {
		select {
		case r, ok := <-out:
			if !ok {
				t.Fatalf("responses ended without a result (steps %v)", steps)
			}
			switch b := r.GetBody().(type) {
			case *meshv1.EscalationResponse_Progress:
				steps = append(steps, b.Progress.GetAgent())
			case *meshv1.EscalationResponse_Result:
				return b.Result
			case *meshv1.EscalationResponse_Error:
				t.Fatalf("escalation error %s: %s", b.Error.GetCode(), b.Error.GetMessage())
			}
		case <-timeout:
			t.Fatalf("no result within a minute (steps %v)", steps)
		}
	}
}

func TestHeartbeatsVitalsAndMetrics(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-hb", Account: "acme"}, time.Hour)
	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: c, Version: "1.2.3", Vitals: harness.FixedVitals(91, 70),
		Prewarm: agent.Prewarm{MinInterval: time.Hour}})
	waitFor(t, 10*time.Second, "three acked heartbeats", func() bool { return a.Status().Acked >= 3 })
	if rtt := a.Status().LastRTT; rtt <= 0 || rtt > time.Second {
		t.Fatalf("rtt %v", rtt)
	}
	ctx := context.Background()
	waitFor(t, 5*time.Second, "vitals in the registry", func() bool {
		h, err := m.Store.HubByID(ctx, "gpu-hb")
		return err == nil && h.GPULoad == 0.91 && h.GPUTempC == 70 && h.NVML && h.Connected && h.Version == "1.2.3" && h.RTTMicros > 0
	})
	// The dashboard's history: one reading a minute, however often the hub beats.
	if hist, err := m.Store.VitalsHistory(ctx, "acme", time.Now().Add(-time.Hour)); err != nil || len(hist["gpu-hb"]) != 1 ||
		hist["gpu-hb"][0].GPULoad != 0.91 || hist["gpu-hb"][0].GPUTempC != 70 {
		t.Fatalf("vitals history %+v, %v", hist, err)
	}
	// Load 0.91 is over 0.8: one pre-warm, and a warm-up workflow for it.
	waitFor(t, 10*time.Second, "a warm-up workflow", func() bool {
		resp, err := m.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: "WorkflowType = 'WarmupWorkflow'"})
		if err != nil {
			return false
		}
		for _, e := range resp.GetExecutions() {
			if strings.HasPrefix(e.GetExecution().GetWorkflowId(), "warmup-gpu-hb-") {
				return true
			}
		}
		return false
	})
	rec := httptest.NewRecorder()
	b.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{"si_bridge_connected_hubs 1", "si_bridge_prewarms_total 1", "si_bridge_heartbeat_rtt_seconds_count", "si_bridge_hub_connects_total 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestPlacementFollowsTheBridge(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	cases := []struct {
		id         string
		util, temp uint32
		want       string
	}{
		{"gpu-cool", 30, 50, ""},
		{"gpu-hot", 30, 90, "too hot"},
		{"gpu-busy", 99, 60, "GPU load 99%"},
	}
	ctx := context.Background()
	pl := &activities.Placement{Temporal: m.Client, Hubs: m.Store}
	for _, tc := range cases {
		c := p.Enroll(t, m.Store, pki.Identity{DeviceID: tc.id, Account: "acme"}, time.Hour)
		harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: c, Vitals: harness.FixedVitals(tc.util, tc.temp)})
		m.StartHub(t, tc.id)
		waitFor(t, 10*time.Second, tc.id+" in the registry", func() bool {
			h, err := m.Store.HubByID(ctx, tc.id)
			return err == nil && h.GPUCount == 1
		})
		time.Sleep(200 * time.Millisecond) // the hub worker's pollers register
		st, err := pl.HubAvailable(ctx, workers.HubQueue(tc.id))
		if err != nil {
			t.Fatal(err)
		}
		if st.Healthy != (tc.want == "") || !strings.Contains(st.Reason, tc.want) {
			t.Errorf("%s: %+v, want %q", tc.id, st, tc.want)
		}
	}
	// Offline: a hub whose tunnel closed gets no new inference even though its worker polls.
	b.Stop()
	waitFor(t, 5*time.Second, "gpu-cool offline", func() bool {
		st, err := pl.HubAvailable(ctx, workers.HubQueue("gpu-cool"))
		return err == nil && !st.Healthy && strings.Contains(st.Reason, "offline")
	})
}

// TestReconnectLosesNothing restarts the bridge under a running hub with an
// escalation and usage records queued while it is down.
func TestReconnectLosesNothing(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 20 * time.Millisecond})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	addr := b.Addr().String()
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-re", Account: "acme"}, time.Hour)
	backoff := agent.Backoff{Min: 50 * time.Millisecond, Max: 400 * time.Millisecond}
	a := harness.StartAgent(t, agent.Options{Bridge: addr, TLS: c, Backoff: backoff})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}

	// An escalation in flight when the bridge goes away.
	_, inflight, err := a.Escalate(&meshv1.EscalationRequest{RequestId: "inflight", Prompt: "q [sim:disagree]", MaxRounds: 3})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	b.Stop()
	waitFor(t, 5*time.Second, "the agent to notice", func() bool { return !a.Status().Connected })

	// Work queued while down.
	_, queued, err := a.Escalate(&meshv1.EscalationRequest{RequestId: "queued", Prompt: "q2 [sim:agree]"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := a.RecordUsage(&meshv1.UsageRecord{EventId: fmt.Sprintf("u%d", i), Project: "p", Model: "m", PromptTokens: 10, AtUnixNano: time.Now().UnixNano()}); err != nil {
			t.Fatal(err)
		}
	}
	if st := a.Status(); st.Queued != 2 || st.QueuedUsage != 5 {
		t.Fatalf("queued %+v", st)
	}

	restarted := time.Now()
	harness.StartBridge(t, m, p, addr)
	// Backoff attempts double from 50ms to the 400ms cap; with the time the
	// agent spent failing before the restart, it is back within one capped
	// wait plus a handshake.
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(restarted); took > backoff.Max+2*time.Second {
		t.Fatalf("reconnected after %v", took)
	}
	r1, r2 := result(t, inflight), result(t, queued)
	if r1.GetStatus() != workflows.StatusArbiter || r2.GetStatus() != workflows.StatusConsensus {
		t.Fatalf("results %v %v", r1, r2)
	}
	waitFor(t, 5*time.Second, "usage delivered", func() bool { return a.Status().QueuedUsage == 0 })
	if n, err := m.Store.HubUsageCount(ctx, "gpu-re"); err != nil || n != 5 {
		t.Fatalf("usage records stored %d, want 5: %v", n, err)
	}
	// ... and billed once each to the device's account (the escalations' steps bill there too).
	var hubEvents int
	rows, _ := m.Store.UsageSince(ctx, "acme", time.Time{}, 1000)
	for _, r := range rows {
		if strings.HasPrefix(r.Usage.EventID, "hub/gpu-re/") {
			hubEvents++
		}
	}
	if b, _ := m.Store.Books(ctx, "acme"); hubEvents != 5 || !b.Balanced() {
		t.Fatalf("hub usage billed %d times, want 5; books %+v", hubEvents, b)
	}
	// Each escalation ran as exactly one workflow run.
	for _, id := range []string{"escalation-gpu-re:inflight", "escalation-gpu-re:queued"} {
		resp, err := m.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: fmt.Sprintf("WorkflowId = '%s'", id)})
		if err != nil || len(resp.GetExecutions()) != 1 {
			t.Fatalf("%s ran %d times: %v", id, len(resp.GetExecutions()), err)
		}
	}
	if a.Status().Sessions < 2 {
		t.Fatalf("sessions %d", a.Status().Sessions)
	}
}

func TestLossyLink(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	relay := harness.LossyRelay(t, b.Addr().String(), 0.15, 42)
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-lossy", Account: "acme"}, time.Hour)
	a := harness.StartAgent(t, agent.Options{Bridge: relay, TLS: c})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "heartbeats through 15% loss", func() bool { return a.Status().Acked >= 10 })
	_, out, err := a.Escalate(&meshv1.EscalationRequest{RequestId: "lossy", Prompt: "q [sim:agree]"})
	if err != nil {
		t.Fatal(err)
	}
	if r := result(t, out); r.GetStatus() != workflows.StatusConsensus {
		t.Fatalf("result %v", r)
	}
}

// TestEscalationIDsDoNotCollideAcrossDevices: device "gpu" with request
// "1-job7" and device "gpu-1" with request "job7", in two accounts, must be
// two workflows: neither reads the other's answer nor plants its own, in
// whichever order they ask.
func TestEscalationIDsDoNotCollideAcrossDevices(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	connect := func(device, account string) *agent.Agent {
		c := p.Enroll(t, m.Store, pki.Identity{DeviceID: device, Account: account}, time.Hour)
		a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: c})
		if err := a.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
		return a
	}
	gpu, gpu1 := connect("gpu", "acme"), connect("gpu-1", "globex")
	ask := func(a *agent.Agent, request, prompt string) *meshv1.EscalationResult {
		t.Helper()
		_, out, err := a.Escalate(&meshv1.EscalationRequest{RequestId: request, Prompt: prompt})
		if err != nil {
			t.Fatal(err)
		}
		return result(t, out)
	}
	check := func(res *meshv1.EscalationResult, account, mine, theirs string) {
		t.Helper()
		if !strings.Contains(res.GetAnswer(), mine) || strings.Contains(res.GetAnswer(), theirs) {
			t.Errorf("%s got the answer %q (its prompt says %q)", account, res.GetAnswer(), mine)
		}
		run, err := m.Store.ConsensusRun(ctx, res.GetWorkflowId())
		if err != nil || run.Account != account {
			t.Errorf("%s's run %s billed to %q: %v", account, res.GetWorkflowId(), run.Account, err)
		}
	}
	// acme first: globex must not read acme's answer.
	a1 := ask(gpu, "1-job7", "acme-secret-plan [sim:agree]")
	g1 := ask(gpu1, "job7", "globex-question [sim:agree]")
	check(a1, "acme", "acme-secret-plan", "globex-question")
	check(g1, "globex", "globex-question", "acme-secret-plan")
	// globex first: the answer it plants must not reach acme.
	g2 := ask(gpu1, "job8", "globex-planted [sim:agree]")
	a2 := ask(gpu, "1-job8", "acme-real [sim:agree]")
	check(g2, "globex", "globex-planted", "acme-real")
	check(a2, "acme", "acme-real", "globex-planted")
	if a1.GetWorkflowId() == g1.GetWorkflowId() || a2.GetWorkflowId() == g2.GetWorkflowId() {
		t.Fatalf("two devices share workflows: %s %s", a1.GetWorkflowId(), a2.GetWorkflowId())
	}
	// The owner sending a finished request again still gets its own result.
	if again := ask(gpu, "1-job7", "acme-secret-plan [sim:agree]"); again.GetWorkflowId() != a1.GetWorkflowId() || again.GetAnswer() != a1.GetAnswer() {
		t.Fatalf("resent request: %v, first %v", again, a1)
	}
}

// TestEscalationRefusesAnotherAccountsRun: a workflow already under a
// device's escalation id whose input bills another account (planted through
// any other path) is not streamed to the device.
func TestEscalationRefusesAnotherAccountsRun(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	harness.EnsureAccount(t, m.Store, "globex")
	wid := bridge.EscalationWorkflowID("gpu-victim", "planted")
	run, err := m.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: wid, TaskQueue: workers.CloudQueue},
		workflows.ConsensusWorkflow, workflows.ConsensusInput{Prompt: "planted-answer [sim:agree]", Account: "globex",
			Placement: workflows.PlacementCloud, CloudQueue: workers.CloudQueue})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-victim", Account: "acme"}, time.Hour)
	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: c})
	_, out, err := a.Escalate(&meshv1.EscalationRequest{RequestId: "planted", Prompt: "my own question [sim:agree]"})
	if err != nil {
		t.Fatal(err)
	}
	timeout := time.After(time.Minute)
	for {
		select {
		case r, ok := <-out:
			if !ok {
				t.Fatal("responses ended without an error")
			}
			switch body := r.GetBody().(type) {
			case *meshv1.EscalationResponse_Progress:
				if strings.Contains(body.Progress.GetText(), "planted-answer") {
					t.Fatalf("the device read another account's run: %q", body.Progress.GetText())
				}
			case *meshv1.EscalationResponse_Result:
				t.Fatalf("the device got another account's result: %v", body.Result)
			case *meshv1.EscalationResponse_Error:
				if body.Error.GetCode() != bridge.ErrCodeInvalid || !strings.Contains(body.Error.GetMessage(), "request_id") {
					t.Fatalf("error %s: %s", body.Error.GetCode(), body.Error.GetMessage())
				}
				return
			}
		case <-timeout:
			t.Fatal("no answer within a minute")
		}
	}
}

// dial opens a raw tunnel connection with c, as a hub that never says hello would.
func dial(t *testing.T, addr string, c *tls.Config) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, c, &quic.Config{HandshakeIdleTimeout: 3 * time.Second, KeepAlivePeriod: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.CloseWithError(0, "") })
	return conn
}

// escalateRaw runs one escalation on its own stream of conn and returns the last response.
func escalateRaw(t *testing.T, conn *quic.Conn, req *meshv1.EscalationRequest) *meshv1.EscalationResponse {
	t.Helper()
	return escalateOn(t, bridge.QUICConn(conn), req)
}

// closedWith waits for conn to be closed by the bridge and returns the application error.
func closedWith(t *testing.T, conn *quic.Conn, limit time.Duration) *quic.ApplicationError {
	t.Helper()
	select {
	case <-conn.Context().Done():
	case <-time.After(limit):
		t.Fatalf("still connected after %s", limit)
	}
	var ae *quic.ApplicationError
	if !errors.As(context.Cause(conn.Context()), &ae) || !ae.Remote {
		t.Fatalf("connection ended with %v, not a close from the bridge", context.Cause(conn.Context()))
	}
	return ae
}

// TestRevokedWithoutHelloIsDropped: a device that opens only escalation
// streams, never a control stream, is disconnected at the re-check after
// its revocation.
func TestRevokedWithoutHelloIsDropped(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.RecheckInterval = 100 * time.Millisecond })
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-quiet", Account: "acme"}, time.Hour)
	conn := dial(t, b.Addr().String(), c)
	if r := escalateRaw(t, conn, &meshv1.EscalationRequest{RequestId: "before", Prompt: "q [sim:agree]"}); r.GetResult() == nil {
		t.Fatalf("escalation before revocation: %v", r)
	}
	if err := m.Store.RevokeDevice(context.Background(), "gpu-quiet"); err != nil {
		t.Fatal(err)
	}
	if ae := closedWith(t, conn, 5*time.Second); ae.ErrorCode != bridge.CodeRevoked {
		t.Fatalf("closed with %v, want CodeRevoked", ae)
	}
}

// TestExpiredWhileConnectedIsDropped: a certificate that expires while its
// hub is connected ends the connection at the next re-check, whether or
// not the hub said hello.
func TestExpiredWhileConnectedIsDropped(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.RecheckInterval = 100 * time.Millisecond })
	// Long enough for a whole escalation to finish before expiry on a
	// loaded machine under -race.
	ttl := 12 * time.Second
	withHello := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-brief", Account: "acme"}, ttl)
	noHello := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-brief-raw", Account: "acme"}, ttl)
	issued := time.Now()
	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: withHello})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, b.Addr().String(), noHello)
	if r := escalateRaw(t, conn, &meshv1.EscalationRequest{RequestId: "before", Prompt: "q [sim:agree]"}); r.GetResult() == nil {
		t.Fatalf("escalation before expiry: %v", r)
	}
	if ae := closedWith(t, conn, ttl+5*time.Second); ae.ErrorCode != bridge.CodeExpired {
		t.Fatalf("closed with %v, want CodeExpired", ae)
	}
	if time.Since(issued) < ttl-time.Second {
		t.Fatalf("closed %s after issue, before the certificate expired", time.Since(issued))
	}
	waitFor(t, 3*time.Second, "the expired hub to be dropped", func() bool { return !a.Status().Connected })
	time.Sleep(time.Second) // its reconnection attempts are refused at the handshake
	if a.Status().Connected {
		t.Fatal("an expired device got back in")
	}
}

// TestConnectionsPerDeviceCapped: a device past its connection cap is
// refused with a reason that says so; other devices are not affected, and
// closing one connection makes room for another.
func TestConnectionsPerDeviceCapped(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.MaxConnsPerDevice = 2 })
	addr := b.Addr().String()
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-greedy", Account: "acme"}, time.Hour)
	other := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-neighbour", Account: "acme"}, time.Hour)
	works := func(conn *quic.Conn, req string) {
		t.Helper()
		if r := escalateRaw(t, conn, &meshv1.EscalationRequest{RequestId: req, Prompt: "q [sim:agree]"}); r.GetResult() == nil {
			t.Fatalf("escalation %s: %v", req, r)
		}
	}
	first, second := dial(t, addr, c), dial(t, addr, c)
	works(first, "one")
	works(second, "two")
	third := dial(t, addr, c)
	ae := closedWith(t, third, 5*time.Second)
	if ae.ErrorCode != bridge.CodeTooMany || !strings.Contains(ae.ErrorMessage, "2 connections open") {
		t.Fatalf("third connection closed with %v", ae)
	}
	works(dial(t, addr, other), "neighbour")
	_ = first.CloseWithError(0, "done")
	time.Sleep(200 * time.Millisecond) // the bridge sees the close
	works(dial(t, addr, c), "three")
}

// TestStreamsPerConnectionCapped: a connection cannot hold more streams
// open than MaxStreamsPerConn.
func TestStreamsPerConnectionCapped(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.MaxStreamsPerConn = 3; o.StreamReadTimeout = time.Minute })
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-streams", Account: "acme"}, time.Hour)
	conn := dial(t, b.Addr().String(), c)
	for i := range 3 {
		s, err := conn.OpenStream()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		// The kind and nothing else: the stream stays open on the bridge.
		if _, err := s.Write([]byte{bridge.StreamEscalation}); err != nil {
			t.Fatal(err)
		}
	}
	var limit *quic.StreamLimitReachedError
	if _, err := conn.OpenStream(); !errors.As(err, &limit) {
		t.Fatalf("fourth stream: %v, want the stream limit", err)
	}
}

// TestSilentStreamsTimeOut: a stream that declares a large frame and sends
// a few bytes of it is reset after StreamReadTimeout, and a control stream
// that never says hello ends the connection.
func TestSilentStreamsTimeOut(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.StreamReadTimeout = 300 * time.Millisecond })
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-slow", Account: "acme"}, time.Hour)
	conn := dial(t, b.Addr().String(), c)
	s, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hdr := binary.AppendUvarint([]byte{bridge.StreamEscalation}, wire.MaxMessageBytes)
	if _, err := s.Write(append(hdr, make([]byte, 10)...)); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var se *quic.StreamError
	if _, err := s.Read(make([]byte, 1)); !errors.As(err, &se) || !se.Remote {
		t.Fatalf("a stalled escalation stream read %v, want a reset from the bridge", err)
	}

	ctl, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.Write([]byte{bridge.StreamControl}); err != nil {
		t.Fatal(err)
	}
	if ae := closedWith(t, conn, 5*time.Second); ae.ErrorCode != bridge.CodeProtocol {
		t.Fatalf("a control stream without hello: closed with %v", ae)
	}
}

// TestTimedOutStreamsFreeTheirSlots: streams that stall and are reset by
// the bridge no longer count against the connection's stream cap, even
// when the hub never finishes its side.
func TestTimedOutStreamsFreeTheirSlots(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) {
		o.MaxStreamsPerConn = 2
		o.StreamReadTimeout = 200 * time.Millisecond
	})
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-stall", Account: "acme"}, time.Hour)
	conn := dial(t, b.Addr().String(), c)
	stall := func(prefix []byte) {
		t.Helper()
		for range 2 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s, err := conn.OpenStreamSync(ctx)
			cancel()
			if err != nil {
				t.Fatalf("no stream slot came free: %v", err)
			}
			if _, err := s.Write(prefix); err != nil {
				t.Fatal(err)
			}
		}
	}
	stall([]byte{bridge.StreamEscalation, 0x80}) // half a frame header
	stall([]byte{bridge.StreamEscalation})       // the kind only
	stall([]byte{bridge.StreamEscalation, 0x80})
	if r := escalateRaw(t, conn, &meshv1.EscalationRequest{RequestId: "after", Prompt: "q [sim:agree]"}); r.GetResult() == nil {
		t.Fatalf("escalation after the stalled streams: %v", r)
	}
}

// TestSilentControlStreamIsClosed: a hub that says hello and then falls
// silent on its control stream, keeping the connection alive with QUIC's
// own keep-alives, loses the connection once the idle bound passes, while a
// hub that goes on beating on the same bridge keeps its own.
func TestSilentControlStreamIsClosed(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	// The idle bound is max(StreamReadTimeout, 12 x HeartbeatInterval): 400 ms.
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) {
		o.StreamReadTimeout = 400 * time.Millisecond
		o.HeartbeatInterval = 10 * time.Millisecond
	})
	hello := func(id string) (*quic.Conn, *quic.Stream) {
		t.Helper()
		conn := dial(t, b.Addr().String(), p.Enroll(t, m.Store, pki.Identity{DeviceID: id, Account: "acme"}, time.Hour))
		s, err := conn.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte{bridge.StreamControl}); err != nil {
			t.Fatal(err)
		}
		if err := wire.Write(s, &meshv1.HubMessage{Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{}}}); err != nil {
			t.Fatal(err)
		}
		var ack meshv1.BridgeMessage
		if err := wire.NewReader(s).Read(&ack); err != nil || ack.GetHelloAck() == nil {
			t.Fatalf("hello: %v, %v", &ack, err)
		}
		return conn, s
	}
	silent, _ := hello("gpu-mute")
	start := time.Now()
	beating, s := hello("gpu-live")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for seq := uint64(1); ; seq++ {
			if wire.Write(s, &meshv1.HubMessage{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: seq}}}) != nil {
				return
			}
			select {
			case <-t.C:
			case <-stop:
				return
			}
		}
	}()
	go func() { _, _ = io.Copy(io.Discard, s) }() // the acks
	ae := closedWith(t, silent, 5*time.Second)
	if ae.ErrorCode != bridge.CodeProtocol || !strings.Contains(ae.ErrorMessage, "no message on the control stream") {
		t.Fatalf("the silent hub was closed with %v", ae)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("the silent hub was closed after %v, before its idle bound", waited)
	}
	time.Sleep(time.Second) // more than twice the bound, beating every 100 ms
	close(stop)
	<-done
	if err := beating.Context().Err(); err != nil {
		t.Fatalf("the beating hub lost its connection: %v", context.Cause(beating.Context()))
	}
}

// TestRecheckDropsOnlyTheRevoked: the re-check asks about every connected
// certificate at once; of many hubs on one bridge, the revoked device's
// connections (two of them, one certificate) are closed and every other
// hub's stays up through later re-checks.
func TestRecheckDropsOnlyTheRevoked(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.RecheckInterval = 100 * time.Millisecond })
	var others []*quic.Conn
	for i := range 6 {
		c := p.Enroll(t, m.Store, pki.Identity{DeviceID: fmt.Sprintf("gpu-fleet-%d", i), Account: "acme"}, time.Hour)
		others = append(others, dial(t, b.Addr().String(), c))
	}
	stolen := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-fleet-stolen", Account: "acme"}, time.Hour)
	first, second := dial(t, b.Addr().String(), stolen), dial(t, b.Addr().String(), stolen)
	time.Sleep(300 * time.Millisecond) // re-checks with nothing revoked
	if err := m.Store.RevokeDevice(context.Background(), "gpu-fleet-stolen"); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []*quic.Conn{first, second} {
		if ae := closedWith(t, conn, 5*time.Second); ae.ErrorCode != bridge.CodeRevoked {
			t.Fatalf("the revoked device was closed with %v, want CodeRevoked", ae)
		}
	}
	time.Sleep(500 * time.Millisecond)
	for i, conn := range others {
		if conn.Context().Err() != nil {
			t.Fatalf("hub %d lost its connection: %v", i, context.Cause(conn.Context()))
		}
	}
}

// TestASecondControlStreamDoesNotTakeTheHubOffline: a hub that opens a
// second control stream on its connection and ends it, while its first
// goes on beating, stays online in the registry; the second is refused.
func TestASecondControlStreamDoesNotTakeTheHubOffline(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	conn := dial(t, b.Addr().String(), p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-twice", Account: "acme"}, time.Hour))
	control := func() (*quic.Stream, *wire.Reader, error) {
		s, err := conn.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// A refused stream may be reset before the hello is written.
		if _, err := s.Write([]byte{bridge.StreamControl}); err != nil {
			return s, nil, err
		}
		if err := wire.Write(s, &meshv1.HubMessage{Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{}}}); err != nil {
			return s, nil, err
		}
		_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
		defer func() { _ = s.SetReadDeadline(time.Time{}) }()
		r := wire.NewReader(s)
		var ack meshv1.BridgeMessage
		if err := r.Read(&ack); err != nil {
			return s, r, err
		}
		if ack.GetHelloAck() == nil {
			t.Fatalf("hello answered with %v", &ack)
		}
		return s, r, nil
	}
	first, acks, err := control()
	if err != nil {
		t.Fatalf("first control stream: %v", err)
	}
	registered := func() store.Hub {
		hs, err := m.Store.Hubs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			if h.DeviceID == "gpu-twice" {
				return h
			}
		}
		return store.Hub{}
	}
	online := func() bool { return registered().Connected }
	waitFor(t, 5*time.Second, "the hub online", online)
	second, _, err := control()
	if se := (*quic.StreamError)(nil); !errors.As(err, &se) || se.ErrorCode != 3 {
		t.Errorf("a second control stream on the same connection: %v, want it refused with stream error 3", err)
	}
	second.CancelRead(0)
	_ = second.Close()
	// The first stream still carries heartbeats, and the hub is online.
	for seq := uint64(1); seq <= 5; seq++ {
		if err := wire.Write(first, &meshv1.HubMessage{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: seq}}}); err != nil {
			t.Fatal(err)
		}
		var ack meshv1.BridgeMessage
		if err := acks.Read(&ack); err != nil || ack.GetHeartbeatAck().GetSeq() != seq {
			t.Fatalf("heartbeat %d on the first stream: %v, %v", seq, &ack, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !online() {
		t.Fatal("the hub is offline in the registry while its first control stream is alive")
	}
	// And the bridge still writes its heartbeats.
	seen := func() time.Time { return registered().LastSeen }
	before := seen()
	waitFor(t, 5*time.Second, "a heartbeat after the refused stream written", func() bool {
		seq := uint64(100)
		if err := wire.Write(first, &meshv1.HubMessage{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: seq, Vitals: &meshv1.HardwareVitals{CpuLoad: 0.9}}}}); err != nil {
			t.Fatal(err)
		}
		var ack meshv1.BridgeMessage
		if err := acks.Read(&ack); err != nil {
			t.Fatal(err)
		}
		return seen().After(before)
	})
}
