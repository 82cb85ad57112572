package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// TestHubKilledLosesNothing kills a real `si hub` with SIGKILL while an
// escalation runs in the cloud (si escalate waiting on it), and while the
// bridge is down with usage records and a second escalation queued, then
// starts it again: every escalation is answered once, each as one workflow
// run, and every usage record is billed once, as PostgreSQL shows.
func TestHubKilledLosesNothing(t *testing.T) {
	si, _ := binaries(t)
	m := harness.StartMesh(t, simulator.Options{Latency: 150 * time.Millisecond})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	addr := b.Addr().String()
	const device, account = "gpu-kill", "acme-kill"
	harness.EnsureAccount(t, m.Store, account)
	is, err := p.CA.IssueDevice(pki.Identity{DeviceID: device, Account: account}, nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Store.RegisterCert(context.Background(), device, account, pki.Serial(is.Cert), is.Cert.NotAfter); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := is.Save(dir, p.CA.CertPEM); err != nil {
		t.Fatal(err)
	}
	api := freeAddr(t)
	env := append(cleanEnv(), "HOME="+t.TempDir())
	startHub := func() *process {
		t.Helper()
		h := &process{cmd: exec.Command(si, "hub", "--bridge", addr, "--cert", filepath.Join(dir, pki.CertFile), "--key", filepath.Join(dir, pki.KeyFile),
			"--ca", filepath.Join(dir, pki.CACertFile), "--api-listen", api, "--no-worker", "--interval", "200ms"), exited: make(chan struct{})}
		h.cmd.Env = env
		h.cmd.Stdout, h.cmd.Stderr = h, h
		if err := h.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = h.cmd.Wait(); close(h.exited) }()
		t.Cleanup(func() {
			_ = h.cmd.Process.Kill()
			<-h.exited
			if t.Failed() {
				t.Logf("si hub:\n%s", h.output())
			}
		})
		return h
	}
	secret := func() string {
		s, _ := agent.ReadSecret(filepath.Join(dir, agent.SecretFile)) // "" until the hub has written it
		return s
	}
	call := func(ctx context.Context, method, path, body string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, method, "http://"+api+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(agent.SecretHeader, "Bearer "+secret())
		return http.DefaultClient.Do(req)
	}
	status := func() map[string]any {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := call(ctx, http.MethodGet, "/v1/status", "")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var st map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&st)
		return st
	}
	waitFor := func(what string, limit time.Duration, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(limit); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %s waiting for %s", limit, what)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runs := func(request string) int {
		resp, err := m.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("WorkflowId = 'escalation-%s:%s'", device, request)})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetExecutions())
	}

	hub := startHub()
	waitFor("the hub to connect", 30*time.Second, func() bool { return status()["connected"] == true })

	// 1. si escalate waits on an escalation that is running in the cloud.
	var cliOut, cliErr bytes.Buffer
	cli := exec.CommandContext(ctx, si, "escalate", "--hub-api", api, "--hub-secret-file", filepath.Join(dir, agent.SecretFile),
		"--request-id", "inflight", "--max-rounds", "3", "--json", "--timeout", "90s", "why? [sim:disagree]")
	cli.Env, cli.Stdout, cli.Stderr = env, &cliOut, &cliErr
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	cliDone := make(chan error, 1)
	go func() { cliDone <- cli.Wait() }()
	waitFor("the escalation's workflow", 30*time.Second, func() bool { return runs("inflight") == 1 })

	// 2. The bridge goes away; usage records and a second escalation queue up.
	b.Stop()
	waitFor("the hub to notice the bridge is gone", 30*time.Second, func() bool { return status()["connected"] == false })
	for i := range 5 {
		resp, err := call(ctx, http.MethodPost, "/v1/usage", fmt.Sprintf(`{"event_id":"kernel-%d","model":"llama-local","prompt_tokens":1000,"completion_tokens":500}`, i))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /v1/usage: %s", resp.Status)
		}
	}
	qctx, qcancel := context.WithCancel(ctx)
	resp, err := call(qctx, http.MethodPost, "/v1/escalate", `{"prompt":"queued while down [sim:agree]","request_id":"queued"}`)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	if resp.StatusCode != http.StatusOK || !strings.Contains(line, "waiting for the link") {
		t.Fatalf("escalation while down: %s %s", resp.Status, line)
	}
	qcancel()
	resp.Body.Close()

	// 3. SIGKILL: nothing is shut down cleanly.
	if err := hub.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-hub.exited

	// 4. The bridge and the hub come back; the hub sends what it kept by itself.
	harness.StartBridge(t, m, p, addr)
	startHub()
	waitFor("the queued escalation to reach the cloud", time.Minute, func() bool { return runs("queued") == 1 })
	waitFor("the outbox to empty", time.Minute, func() bool {
		st := status()
		return st != nil && st["queued_usage"] == float64(0) && st["queued_escalations"] == float64(0)
	})

	// si escalate attached again after the kill and got the one run's result.
	select {
	case err := <-cliDone:
		if err != nil || !strings.Contains(cliOut.String(), `"status": "`+workflows.StatusArbiter+`"`) {
			t.Fatalf("si escalate across the kill: %v\nstdout %s\nstderr %s", err, cliOut.String(), cliErr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("si escalate still waiting\nstderr %s", cliErr.String())
	}
	if !strings.Contains(cliErr.String(), "attaching again to request inflight") {
		t.Errorf("si escalate said nothing of the hub going away: %s", cliErr.String())
	}
	// The queued one's result, asked for again by its id.
	out, err := exec.CommandContext(ctx, si, "escalate", "--hub-api", api, "--hub-secret-file", filepath.Join(dir, agent.SecretFile),
		"--request-id", "queued", "--json", "queued while down [sim:agree]").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"status": "`+workflows.StatusConsensus+`"`) {
		t.Fatalf("the queued escalation's result: %v\n%s", err, out)
	}
	for _, r := range []string{"inflight", "queued"} {
		if n := runs(r); n != 1 {
			t.Errorf("escalation %s ran %d times", r, n)
		}
	}

	// Billed once each, and stored once each, in PostgreSQL.
	var billed, stored int
	if err := m.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM usage_events WHERE account_id = $1 AND event_id LIKE $2`,
		account, "hub/"+device+"/kernel-%").Scan(&billed); err != nil {
		t.Fatal(err)
	}
	if err := m.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM hub_usage WHERE device_id = $1 AND event_id LIKE 'kernel-%'`, device).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if billed != 5 || stored != 5 {
		t.Fatalf("usage records billed %d and stored %d times, want 5 and 5", billed, stored)
	}
	if books, err := m.Store.Books(ctx, account); err != nil || !books.Balanced() {
		t.Fatalf("books %+v %v", books, err)
	}
}
