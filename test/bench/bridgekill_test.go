package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
)

// siProc is an si process (a bridge, a hub) with its output kept.
type siProc struct {
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	exited chan struct{}
}

func (p *siProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *siProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *siProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// startSI runs si with args until cleanup (SIGTERM, then SIGKILL).
func startSI(b *testing.B, si, name string, env []string, args ...string) *siProc {
	b.Helper()
	p := &siProc{name: name, cmd: exec.Command(si, args...), exited: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	b.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if b.Failed() {
			b.Logf("%s:\n%s", name, tail(p.output(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// waitReady polls addr's /ready until it answers 200.
func waitReady(b *testing.B, p *siProc, addr string) {
	b.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if !p.alive() {
			b.Fatalf("%s exited before it was ready:\n%s", p.name, tail(p.output(), 4000))
		}
		if resp, err := http.Get("http://" + addr + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not ready after a minute:\n%s", p.name, tail(p.output(), 4000))
		}
	}
}

func freeLoopback(b *testing.B) string {
	b.Helper()
	port, err := devstack.FreePort("127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// BenchmarkBridgeKillRecovery SIGKILLs the real `si server --roles bridge`
// process (one of two) that holds a real `si hub`, while a steady stream of
// escalations runs through it, and times the kill to the next escalation
// step the hub's local callers receive. The hub has both bridges' addresses
// and heartbeats every second; it notices the missing ack and dials the
// other bridge, and the escalations in flight re-attach to their workflows
// there. The killed bridge is started again (same address) before the next
// kill, which hits whichever bridge holds the hub then. Every escalation
// must end with its result, each request as one workflow.
func BenchmarkBridgeKillRecovery(b *testing.B) {
	si := buildSI(b)
	m := harness.StartMesh(b, simulator.Options{Latency: 200 * time.Millisecond})
	p := harness.NewPKI(b)
	const device, account = "bench-bridgekill", "bench-bridgekill"
	harness.EnsureAccount(b, m.Store, account)

	// The bridges get a server certificate and the CA's certificate, never its key.
	caDir := b.TempDir()
	srv, err := p.CA.IssueServer([]string{"127.0.0.1", "localhost"}, 24*time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	for name, data := range map[string][]byte{pki.CACertFile: p.CA.CertPEM, "bridge-cert.pem": srv.CertPEM, "bridge-key.pem": srv.KeyPEM} {
		if err := os.WriteFile(filepath.Join(caDir, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SI_") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+b.TempDir())
	bridgeAddrs := []string{freeLoopback(b), freeLoopback(b)}
	bridges := make([]*siProc, len(bridgeAddrs))
	startBridge := func(i int) {
		metrics := freeLoopback(b)
		bridges[i] = startSI(b, si, "bridge "+bridgeAddrs[i], env, "server", "--roles", "bridge", "--bridge-listen", bridgeAddrs[i],
			"--ca-dir", caDir, "--server-cert", filepath.Join(caDir, "bridge-cert.pem"), "--server-key", filepath.Join(caDir, "bridge-key.pem"),
			"--metrics-listen", metrics, "--database-url", m.DatabaseURL, "--temporal-address", harness.Temporal(b),
			"--namespace", devstack.Namespace, "--log-level", "warn")
		waitReady(b, bridges[i], metrics)
	}
	for i := range bridges {
		startBridge(i)
	}

	is, err := p.CA.IssueDevice(pki.Identity{DeviceID: device, Account: account}, nil, time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Store.RegisterCert(context.Background(), device, account, pki.Serial(is.Cert), is.Cert.NotAfter); err != nil {
		b.Fatal(err)
	}
	devDir := b.TempDir()
	if err := is.Save(devDir, p.CA.CertPEM); err != nil {
		b.Fatal(err)
	}
	api, hubMetrics := freeLoopback(b), freeLoopback(b)
	hub := startSI(b, si, "si hub", env, "hub", "--bridge", strings.Join(bridgeAddrs, ","), "--cert", filepath.Join(devDir, pki.CertFile),
		"--key", filepath.Join(devDir, pki.KeyFile), "--ca", filepath.Join(devDir, pki.CACertFile), "--api-listen", api,
		"--metrics-listen", hubMetrics, "--no-worker", "--interval", "1s", "--redial-max", "1s")
	waitReady(b, hub, hubMetrics)
	secret, err := agent.ReadSecret(filepath.Join(devDir, agent.SecretFile))
	if err != nil {
		b.Fatal(err)
	}

	// The steady stream: callers of the hub's local API, each running
	// three-round escalations back to back. steps gets the time of every
	// agent step a caller receives.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stopping atomic.Bool // callers finish the escalation in hand, then stop
	steps := &stepLog{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var requests []string
	var failures []string
	const callers = 2
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stopping.Load(); n++ {
				id := fmt.Sprintf("kill-%d-%d", c, n)
				mu.Lock()
				requests = append(requests, id)
				mu.Unlock()
				if why := escalateLocal(ctx, api, secret, id, steps); why != "" {
					mu.Lock()
					failures = append(failures, id+": "+why)
					mu.Unlock()
				}
			}
		}()
	}
	nextStep := func(after time.Time, limit time.Duration) (time.Duration, bool) {
		for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			if at, ok := steps.firstAfter(after); ok {
				return at.Sub(after), true
			}
		}
		return 0, false
	}
	if _, ok := nextStep(time.Now(), time.Minute); !ok {
		b.Fatalf("no escalation step within a minute of the start\n%s", tail(hub.output(), 4000))
	}

	const kills = 3
	var took []time.Duration
	for k := range kills {
		// The bridge holding the hub, as the registry says.
		var victim int
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			h, err := m.Store.HubByID(ctx, device)
			victim = -1
			for i, a := range bridgeAddrs {
				if err == nil && h.Connected && h.Bridge == a {
					victim = i
				}
			}
			if victim >= 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("kill %d: the hub is on no bridge of ours: %+v %v", k, h, err)
			}
		}
		// Kill it just after a step arrived, with the stream in full flow.
		if _, ok := nextStep(time.Now(), 30*time.Second); !ok {
			b.Fatalf("kill %d: no step before the kill", k)
		}
		if err := bridges[victim].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		killed := time.Now()
		<-bridges[victim].exited
		d, ok := nextStep(killed, 60*time.Second)
		if !ok {
			b.Fatalf("kill %d: no escalation step within 60 s of the SIGKILL\n%s", k, tail(hub.output(), 4000))
		}
		took = append(took, d)
		b.Logf("kill %d (bridge %s): next step %s after the SIGKILL", k, bridgeAddrs[victim], d.Round(time.Millisecond))
		// The killed bridge comes back on its address for the next kill.
		startBridge(victim)
		time.Sleep(2 * time.Second)
	}
	stopping.Store(true)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		b.Fatalf("escalations that did not end with a result: %v", failures)
	}
	// Each request ran as one workflow, however many links it crossed.
	lctx, lcancel := context.WithTimeout(context.Background(), time.Minute)
	defer lcancel()
	for _, id := range requests {
		resp, err := m.Client.ListWorkflow(lctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("WorkflowId = 'escalation-%s:%s'", device, id)})
		if err != nil {
			b.Fatal(err)
		}
		if n := len(resp.GetExecutions()); n != 1 {
			b.Fatalf("request %s ran as %d workflows, want 1", id, n)
		}
	}
	record("bridge_kill_recovery_s", median(took).Seconds(), fmt.Sprintf(
		"SIGKILL of the si server --roles bridge process (of two) holding a real si hub, to the next escalation step its callers receive; "+
			"%d callers, 1 s heartbeats, median of %d kills (target <= 5; worst %.1f s; %d escalations, none lost or run twice)",
		callers, kills, slicesMax(took).Seconds(), len(requests)))
}

func slicesMax(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// escalateLocal runs one escalation through the hub's local API, sending
// the arrival time of each agent step to steps. It returns why the
// escalation did not end with a result, or "".
func escalateLocal(ctx context.Context, api, secret, id string, steps *stepLog) string {
	body := fmt.Sprintf(`{"prompt":"which sort for nearly sorted data? [sim:disagree]","request_id":%q,"max_rounds":3}`, id)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+api+"/v1/escalate", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(agent.SecretHeader, "Bearer "+secret)
	resp, err := (&http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}}).Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.Status
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r meshv1.EscalationResponse
		if err := protojson.Unmarshal(sc.Bytes(), &r); err != nil {
			return "unreadable line: " + err.Error()
		}
		switch body := r.GetBody().(type) {
		case *meshv1.EscalationResponse_Progress:
			if body.Progress.GetAgent() != "hub" { // the hub's own link notices are no step
				steps.add(time.Now())
			}
		case *meshv1.EscalationResponse_Result:
			return ""
		case *meshv1.EscalationResponse_Error:
			return "error " + body.Error.GetCode() + ": " + body.Error.GetMessage()
		}
	}
	if err := sc.Err(); err != nil {
		return err.Error()
	}
	return "the stream ended without a result"
}

// stepLog keeps when each escalation step arrived.
type stepLog struct {
	mu sync.Mutex
	at []time.Time
}

func (l *stepLog) add(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.at = append(l.at, t)
}

// firstAfter is the first arrival after t.
func (l *stepLog) firstAfter(t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.at) - 1; i >= 0 && l.at[i].After(t); i-- {
		if i == 0 || !l.at[i-1].After(t) {
			return l.at[i], true
		}
	}
	return time.Time{}, false
}
