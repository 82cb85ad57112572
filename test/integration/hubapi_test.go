package integration

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/node"
	"github.com/superinstance/mesh/internal/cli"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// TestHubAPIFromAPageAndFromTheCLI runs a hub as si hub does, with its API
// secret beside its certificate, then sends what a web page could send to
// its local API (nothing runs) and what si escalate sends (it runs, with
// no flag but the address this test's hub listens on).
func TestHubAPIFromAPageAndFromTheCLI(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-home", Account: "acme"}, time.Hour)
	n, err := node.Start(node.Options{
		Agent:     agent.Options{Bridge: b.Addr().String(), TLS: c, DeviceID: "gpu-home"},
		APIListen: "127.0.0.1:0", APISecretFile: filepath.Join(home, ".si", "devices", "gpu-home", agent.SecretFile), DeviceID: "gpu-home",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.Agent.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	url := "http://" + n.APIAddr() + "/v1/escalate"
	body := `{"prompt":"spend it [sim:agree]","request_id":"page"}`
	for name, edit := range map[string]func(*http.Request){
		"text/plain form post": func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") },
		"rebinding Host": func(r *http.Request) {
			r.Header.Set("Content-Type", "application/json")
			r.Host = "attacker.example:7450"
		},
		"wrong secret": func(r *http.Request) {
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Authorization", "Bearer "+strings.Repeat("a", 64))
		},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		edit(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("%s: answered %s", name, resp.Status)
		}
	}

	var out, errb bytes.Buffer
	if code := cli.Main([]string{"escalate", "--hub-api", n.APIAddr(), "Why is the sky blue? [sim:agree]"}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "status    consensus") {
		t.Fatalf("si escalate: exit %d\n%s%s", code, out.String(), errb.String())
	}

	// The Temporal server is shared by the package's tests: count this hub's escalations.
	resp, err := m.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: "WorkflowType = 'ConsensusWorkflow' AND WorkflowId STARTS_WITH 'escalation-gpu-home:'"})
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	for _, e := range resp.GetExecutions() {
		ran = append(ran, e.GetExecution().GetWorkflowId())
	}
	if len(ran) != 1 || strings.HasSuffix(ran[0], ":page") {
		t.Fatalf("escalations run: %v, want only si escalate's", ran)
	}
}
