// Package e2e drives the built `si` binary as a user would, and checks what
// it did with the temporal CLI (v1.5.1, built by `make tools`).
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	_ = os.RemoveAll(configHome)
	harness.Exit(code)
}

// binaries builds si and finds the temporal CLI.
func binaries(t *testing.T) (si, temporal string) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	si = filepath.Join(t.TempDir(), "si")
	build := exec.Command("go", "build", "-o", si, "./cmd/si")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	temporal = os.Getenv("SI_TEMPORAL_CLI")
	if temporal == "" {
		temporal = filepath.Join(root, "bin", "temporal")
	}
	if _, err := os.Stat(temporal); err != nil {
		t.Fatalf("temporal CLI not found at %s: run `make tools` (or set SI_TEMPORAL_CLI)", temporal)
	}
	return si, temporal
}

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := devstack.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

type askResult struct {
	WorkflowID string  `json:"workflow_id"`
	Status     string  `json:"status"`
	Score      float64 `json:"score"`
	Answer     string  `json:"answer"`
	Rounds     []struct {
		Round int `json:"round"`
	} `json:"rounds"`
	Arbiter *struct {
		Note string `json:"note"`
	} `json:"arbiter"`
}

func TestDevAskAndTemporalCLI(t *testing.T) {
	si, temporal := binaries(t)
	m := startDev(t, si, "e2e")
	frontend, ui, hubAPI, dataDir, metricsAddr, mailpitAddr := m.frontend, m.ui, m.hubAPI, m.dataDir, m.metricsAddr, m.mailpit
	text := m.banner
	for _, want := range []string{frontend, "http://" + ui, "SIMULATOR", `"hub.e2e"`, "PostgreSQL"} {
		if !strings.Contains(text, want) {
			t.Errorf("banner lacks %q:\n%s", want, text)
		}
	}

	// Customer commands take no flag at all: si dev stored a token for
	// "dev" with its API's URL where si login would.
	customerSI := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(si, args...)
		cmd.Env = append(cleanEnv(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	runSI := func(args ...string) (string, error) {
		cmd := exec.Command(si, append(args, "--temporal-address", frontend)...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := customerSI(nil, "ask", "--json", "What is the capital of France? [sim:agree]")
	if err != nil {
		t.Fatalf("si ask: %v\n%s", err, out)
	}
	var agreed askResult
	if err := json.Unmarshal([]byte(out), &agreed); err != nil {
		t.Fatalf("si ask --json: %v\n%s", err, out)
	}
	if agreed.Status != "consensus" || len(agreed.Rounds) != 1 || agreed.Answer == "" {
		t.Fatalf("first ask: %+v", agreed)
	}

	out, err = customerSI(nil, "ask", "--max-rounds", "2", "Is P equal to NP? [sim:disagree]")
	if err != nil {
		t.Fatalf("si ask: %v\n%s", err, out)
	}
	for _, want := range []string{"pathos", "round 1", "round 2", "arbiter", "status    arbiter_resolved", "workflow  consensus-"} {
		if !strings.Contains(out, want) {
			t.Fatalf("si ask output lacks %q:\n%s", want, out)
		}
	}
	arbiterID := strings.TrimSpace(out[strings.LastIndex(out, "workflow  ")+len("workflow  "):])

	out, err = customerSI(nil, "ask", "x [sim:malformed]")
	if err == nil || !strings.Contains(out, "pathos's output is unusable after one repair attempt") {
		t.Fatalf("malformed output: err %v\n%s", err, out)
	}

	// The temporal CLI, a real client, sees both runs.
	tc := func(args ...string) []byte {
		cmd := exec.Command(temporal, append(args, "--address", frontend, "--namespace", "default", "--output", "json")...)
		cmd.Env = cleanEnv()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("temporal %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	listed := string(tc("workflow", "list", "--query", "WorkflowType='ConsensusWorkflow'"))
	for _, id := range []string{agreed.WorkflowID, arbiterID} {
		if !strings.Contains(listed, id) {
			t.Fatalf("temporal workflow list lacks %s:\n%s", id, listed)
		}
	}
	var desc struct {
		WorkflowExecutionInfo struct {
			Type   struct{ Name string } `json:"type"`
			Status string                `json:"status"`
		} `json:"workflowExecutionInfo"`
	}
	if err := json.Unmarshal(tc("workflow", "describe", "--workflow-id", arbiterID), &desc); err != nil {
		t.Fatal(err)
	}
	if desc.WorkflowExecutionInfo.Type.Name != "ConsensusWorkflow" || !strings.Contains(desc.WorkflowExecutionInfo.Status, "COMPLETED") {
		t.Fatalf("describe %s: %+v", arbiterID, desc.WorkflowExecutionInfo)
	}
	result := string(tc("workflow", "result", "--workflow-id", arbiterID))
	if !strings.Contains(result, "arbiter_resolved") {
		t.Fatalf("temporal workflow result lacks arbiter_resolved:\n%s", result)
	}

	// Escalation through the local hub's QUIC tunnel, billed to its account.
	cmd := exec.Command(si, "escalate", "--hub-api", hubAPI, "--dev-dir", dataDir, "Why is the sky blue? [sim:agree]")
	cmd.Env = cleanEnv()
	esc, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("si escalate: %v\n%s", err, esc)
	}
	for _, want := range []string{"pathos", "logos", "ethos", "status    consensus", "workflow  escalation-e2e:"} {
		if !strings.Contains(string(esc), want) {
			t.Fatalf("si escalate output lacks %q:\n%s", want, esc)
		}
	}
	cmd = exec.Command(si, "hubs", "--dev-dir", dataDir, "--json")
	cmd.Env = cleanEnv()
	hubsOut, err := cmd.Output()
	if err != nil {
		t.Fatalf("si hubs: %v", err)
	}
	var hubs []struct {
		DeviceID  string `json:"device_id"`
		Account   string `json:"account"`
		Connected bool   `json:"connected"`
		Healthy   bool   `json:"healthy"`
	}
	if err := json.Unmarshal(hubsOut, &hubs); err != nil || len(hubs) != 1 || hubs[0].DeviceID != "e2e" || hubs[0].Account != "acme" ||
		!hubs[0].Connected || !hubs[0].Healthy {
		t.Fatalf("si hubs: %v\n%s", err, hubsOut)
	}
	// Every agent call was billed once: the escalation's to the hub's
	// account, which sees it with a token an operator issued; the asks' to "dev".
	cmd = exec.Command(si, "account", "token", "--dev-dir", dataDir, "--account", "acme")
	cmd.Env = cleanEnv()
	acmeToken, err := cmd.Output()
	if err != nil {
		t.Fatalf("si account token: %v", err)
	}
	usageOut, err := customerSI([]string{"SI_TOKEN=" + strings.TrimSpace(string(acmeToken))}, "usage", "--json")
	if err != nil {
		t.Fatalf("si usage: %v\n%s", err, usageOut)
	}
	var events []struct {
		EventID string `json:"event_id"`
		Charged int64  `json:"charged_micros"`
	}
	if err := json.Unmarshal([]byte(usageOut), &events); err != nil || len(events) != 3 || !strings.HasPrefix(events[0].EventID, "escalation-e2e:") {
		t.Fatalf("si usage as acme: %v\n%s", err, usageOut)
	}
	balOut, err := customerSI(nil, "balance", "--json")
	if err != nil {
		t.Fatalf("si balance: %v\n%s", err, balOut)
	}
	var bal struct {
		Account  string `json:"account"`
		Unbilled int64  `json:"unbilled_micros"`
	}
	if err := json.Unmarshal([]byte(balOut), &bal); err != nil || bal.Account != "dev" || bal.Unbilled <= 0 {
		t.Fatalf("si balance: %v\n%s", err, balOut)
	}
	// The operator's view: the books balance.
	cmd = exec.Command(si, "account", "show", "--dev-dir", dataDir, "--account", "dev", "--json")
	cmd.Env = cleanEnv()
	showOut, err := cmd.Output()
	if err != nil {
		t.Fatalf("si account show: %v", err)
	}
	var books struct {
		Account struct {
			Unbilled int64 `json:"unbilled_micros"`
		} `json:"account"`
		Charged  int64 `json:"charged_micros"`
		Balanced bool  `json:"balanced"`
	}
	if err := json.Unmarshal(showOut, &books); err != nil || !books.Balanced || books.Charged == 0 || books.Account.Unbilled != bal.Unbilled {
		t.Fatalf("si account show: %v\n%s", err, showOut)
	}

	// Our metrics and the Temporal SDK's, on one /metrics.
	if m := httpGet(t, "http://"+metricsAddr+"/metrics"); !strings.Contains(m, "si_bridge_connected_hubs 1") ||
		!strings.Contains(m, `si_bridge_escalations_total{outcome="ok"} 1`) ||
		!strings.Contains(m, `si_consensus_stage_seconds_count{stage="pathos"}`) ||
		!strings.Contains(m, `si_ledger_events_total{outcome="charged"}`) ||
		!strings.Contains(m, "temporal_workflow_completed") || !strings.Contains(m, "temporal_activity_execution_latency") {
		t.Fatalf("metrics:\n%s", m)
	}

	// A handover, found by its search attributes with the temporal CLI.
	out, err = customerSI([]string{"SI_TOKEN=" + strings.TrimSpace(string(acmeToken))}, "invite", "--project", "e2e-team", "--role", "editor", "--quota", "0.05")
	if err != nil {
		t.Fatalf("si invite: %v\n%s", err, out)
	}
	out, err = customerSI([]string{"SI_TOKEN=" + strings.TrimSpace(string(acmeToken))}, "handover", "start", "--project", "e2e-team", "--to", "ada@example.com")
	if err != nil || !strings.Contains(out, "handover ho_") {
		t.Fatalf("si handover start: %v\n%s", err, out)
	}
	handoverID := strings.Fields(out[strings.Index(out, "handover ho_")+len("handover "):])[0]
	handoverID = strings.TrimSuffix(handoverID, ":")
	query := "HandoverStatus = 'pending' AND HandoverProject = 'e2e-team' AND HandoverRecipient = 'ada@example.com'"
	deadline := time.Now().Add(30 * time.Second)
	for {
		listed := string(tc("workflow", "list", "--query", query))
		if strings.Contains(listed, "handover/"+handoverID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("temporal workflow list --query %q lacks handover/%s:\n%s", query, handoverID, listed)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, err = runSI("handover", "stuck", "--older-than", "0s", "--json")
	if err != nil || !strings.Contains(out, `"id": "`+handoverID+`"`) || !strings.Contains(out, `"status": "pending"`) {
		t.Fatalf("si handover stuck: %v\n%s", err, out)
	}
	mb := &harness.Mailbox{URL: "http://" + mailpitAddr}
	offer := mb.WaitFor(t, "ada@example.com", 1, 30*time.Second)[0]
	// The recipient signs up with the address the offer went to and
	// accepts through the API with her own token.
	cmd = exec.Command(si, "account", "create", "--dev-dir", dataDir, "--account", "ada", "--email", "ada@example.com")
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("si account create: %v\n%s", err, out)
	}
	cmd = exec.Command(si, "account", "token", "--dev-dir", dataDir, "--account", "ada")
	cmd.Env = cleanEnv()
	adaToken, err := cmd.Output()
	if err != nil {
		t.Fatalf("si account token: %v", err)
	}
	out, err = customerSI([]string{"SI_TOKEN=" + strings.TrimSpace(string(adaToken))}, "handover", "accept", harness.Link(t, offer.Text, "handover"))
	if err != nil || !strings.Contains(out, "project e2e-team-") || !strings.Contains(out, "subscription schedule sub_sched") {
		t.Fatalf("si handover accept: %v\n%s", err, out)
	}
	cmd = exec.Command(si, "stats", "--dev-dir", dataDir, "--json")
	cmd.Env = cleanEnv()
	statsOut, err := cmd.Output()
	if err != nil {
		t.Fatalf("si stats: %v", err)
	}
	var stats struct {
		InvitesSent       int     `json:"invites_sent"`
		HandoversStarted  int     `json:"handovers_started"`
		HandoversAccepted int     `json:"handovers_accepted"`
		Rate              float64 `json:"handover_accept_rate"`
	}
	if err := json.Unmarshal(statsOut, &stats); err != nil || stats.InvitesSent != 1 || stats.HandoversStarted != 1 ||
		stats.HandoversAccepted != 1 || stats.Rate != 1 {
		t.Fatalf("si stats: %v\n%s", err, statsOut)
	}
	if m := httpGet(t, "http://"+metricsAddr+"/metrics"); !strings.Contains(m, `si_handovers_total{outcome="accepted"} 1`) ||
		!strings.Contains(m, `si_invites_total{outcome="sent"} 1`) {
		t.Fatalf("conversion metrics:\n%s", m)
	}

	// The Web UI serves.
	if c, err := net.DialTimeout("tcp", ui, 2*time.Second); err != nil {
		t.Fatalf("temporal UI: %v", err)
	} else {
		_ = c.Close()
	}

	// Ctrl-C stops everything, PostgreSQL included.
	if err := m.stop(time.Minute); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.rest.String(), "stopped") {
		t.Fatalf("no stop message: %q", m.rest.String())
	}
	if os.Getenv("DATABASE_URL") == "" {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m.pgPort), time.Second); err == nil {
			_ = c.Close()
			t.Fatal("PostgreSQL still listens after si dev stopped")
		}
	}
	if c, err := net.DialTimeout("tcp", frontend, time.Second); err == nil {
		_ = c.Close()
		t.Fatal("Temporal still listens after si dev stopped")
	}
}

func TestAskWithoutServer(t *testing.T) {
	si, _ := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, si, "ask", "--api-url", "http://"+freeAddr(t), "hello")
	cmd.Env = append(cleanEnv(), "SI_TOKEN=si_x")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("si ask without a server succeeded:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "cannot reach the mesh API") || !strings.Contains(lines[0], "si dev") {
		t.Fatalf("want one clear line, got:\n%s", out)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// configHome is the tests' config directory (XDG_CONFIG_HOME), where si
// dev stores its credentials and the customer commands find them.
var configHome = func() string {
	d, err := os.MkdirTemp("", "si-e2e-config-")
	if err != nil {
		panic(err)
	}
	return d
}()

// cleanEnv is the environment without SI_ settings, with the checkout's
// bin/ (the tools `make tools` builds) first on PATH and the tests' own
// config directory.
func cleanEnv() []string {
	bin, _ := filepath.Abs(filepath.Join("..", "..", "bin"))
	env := []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "XDG_CONFIG_HOME=" + configHome}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SI_") && !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			env = append(env, kv)
		}
	}
	return env
}
