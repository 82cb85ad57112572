package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/hubcmd"
	"github.com/superinstance/mesh/hub/node"
	"github.com/superinstance/mesh/internal/cli"
	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

const hubAllowList = `{"commands": [
	{"name": "echo", "path": "/usr/bin/echo", "args": [["<word>"]]},
	{"name": "zeros", "path": "/usr/bin/head", "args": [["-c", "<uint>", "/dev/zero"]], "max_output_bytes": 65536},
	{"name": "sleep", "path": "/usr/bin/sleep", "args": [["<uint>"]], "timeout": "500ms"}
]}`

// startCommandHub runs a hub as si hub does, through the bridge, with
// Hub.RunCommand registered over the allow-list list ("" writes none).
func startCommandHub(t *testing.T, m *harness.Mesh, p *harness.PKI, bridge, account, list string) (string, *hubcmd.Hub) {
	t.Helper()
	device := harness.UniqueID("gpu")
	tc := p.Enroll(t, m.Store, pki.Identity{DeviceID: device, Account: account}, time.Hour)
	dir := t.TempDir()
	h := &hubcmd.Hub{Device: device, Account: account, AllowList: filepath.Join(dir, hubcmd.AllowListFile),
		Audit: hubcmd.NewAudit(filepath.Join(dir, hubcmd.AuditFile))}
	if list != "" {
		if err := os.WriteFile(h.AllowList, []byte(list), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n, err := node.Start(node.Options{
		Agent: agent.Options{Bridge: bridge, TLS: tc, DeviceID: device, Interval: 100 * time.Millisecond,
			Backoff: agent.Backoff{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond}},
		Inference: m.Inference, Commands: h, Namespace: devstack.Namespace, DeviceID: device,
		Worker: worker.Options{WorkerStopTimeout: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitWorker(ctx); err != nil {
		t.Fatalf("hub %s: worker did not start: %v", device, err)
	}
	return device, h
}

func hubExec(t *testing.T, m *harness.Mesh, in workflows.HubCommandInput) (workflows.HubCommandResult, store.HubCommand) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := runner.HubCommand(ctx, m.Client, in)
	if err != nil {
		t.Fatal(err)
	}
	row, err := m.Store.HubCommandByID(ctx, res.ID)
	if err != nil {
		t.Fatalf("no audit row for %s: %v", res.ID, err)
	}
	if row.FinishedAt == nil || row.Device != in.Device || row.Command != in.Command || row.AskedBy != in.AskedBy {
		t.Fatalf("audit row %+v for %+v", row, in)
	}
	return res, row
}

// hubLines returns the hub's audit lines for workflow id.
func hubLines(t *testing.T, h *hubcmd.Hub, id string) []hubcmd.AuditLine {
	t.Helper()
	all, err := hubcmd.Recent(h.Audit.Path(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []hubcmd.AuditLine
	for _, l := range all {
		if l.WorkflowID == id {
			out = append(out, l)
		}
	}
	return out
}

// TestHubCommandsThroughTheBridge: the hub holds only its certificate; the
// cloud asks through HubCommandWorkflow; both sides audit every request.
func TestHubCommandsThroughTheBridge(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	acme, bob := harness.UniqueID("acme"), harness.UniqueID("bob")
	dev, h := startCommandHub(t, m, p, b.Addr().String(), acme, hubAllowList)
	bare, hb := startCommandHub(t, m, p, b.Addr().String(), acme, "")

	t.Run("the owner's account runs an admitted command", func(t *testing.T) {
		res, row := hubExec(t, m, workflows.HubCommandInput{Device: dev, Account: acme, AskedBy: "test owner", Command: "echo", Args: []string{"hello"}})
		if res.Refused != "" || res.Error != "" || res.ExitCode != 0 || string(res.Stdout) != "hello\n" {
			t.Fatalf("%+v", res)
		}
		if row.Account != acme || row.ExitCode == nil || *row.ExitCode != 0 || row.BytesOut != 6 || row.Refused != "" {
			t.Fatalf("cloud audit %+v", row)
		}
		lines := hubLines(t, h, res.ID)
		if len(lines) != 2 || lines[1].Event != hubcmd.EventFinished || lines[1].AskedBy != "test owner" || lines[1].Account != acme ||
			lines[1].WorkflowType != hubcmd.WorkflowType || lines[1].BytesOut != 6 {
			t.Fatalf("hub audit %+v", lines)
		}
		// The history replays; with SI_WRITE_HISTORY it becomes the one the
		// workflows package's replay test reads.
		replays(t, m.Client, res.ID, workflows.HubCommandWorkflow, "hubcommand_history_v0.json")
	})
	t.Run("the operator asks for the device's account", func(t *testing.T) {
		res, row := hubExec(t, m, workflows.HubCommandInput{Device: dev, Operator: true, AskedBy: "operator", Command: "echo", Args: []string{"op"}})
		if res.Refused != "" || string(res.Stdout) != "op\n" || row.Account != acme {
			t.Fatalf("%+v %+v", res, row)
		}
	})
	t.Run("neither an account nor the operator is refused by the cloud", func(t *testing.T) {
		res, row := hubExec(t, m, workflows.HubCommandInput{Device: dev, AskedBy: "a workflow without an account", Command: "echo", Args: []string{"x"}})
		if res.RefusedBy != "cloud" || !strings.Contains(res.Refused, "no account asks") || row.RefusedBy != store.RefusedByCloud {
			t.Fatalf("%+v %+v", res, row)
		}
		if lines := hubLines(t, h, res.ID); len(lines) != 0 {
			t.Fatalf("it reached the hub: %+v", lines)
		}
	})
	t.Run("another account is refused by the cloud, as if the hub did not exist", func(t *testing.T) {
		res, row := hubExec(t, m, workflows.HubCommandInput{Device: dev, Account: bob, AskedBy: "bob", Command: "echo", Args: []string{"pwned"}})
		want := "no device " + dev + " in account " + bob
		if res.Refused != want || res.RefusedBy != "cloud" || len(res.Stdout) > 0 {
			t.Fatalf("%+v", res)
		}
		if row.Account != bob || row.Refused != want || row.RefusedBy != store.RefusedByCloud || row.ExitCode != nil {
			t.Fatalf("cloud audit %+v", row)
		}
		if lines := hubLines(t, h, res.ID); len(lines) != 0 {
			t.Fatalf("bob's request reached the hub: %+v", lines)
		}
		// The same words as for a device that does not exist.
		res, _ = hubExec(t, m, workflows.HubCommandInput{Device: "no-such-gpu", Account: bob, AskedBy: "bob", Command: "echo", Args: []string{"x"}})
		if res.Refused != "no device no-such-gpu in account "+bob {
			t.Fatalf("%+v", res)
		}
	})
	for _, tc := range []struct {
		name    string
		command string
		args    []string
		want    string
	}{
		{"a command not in the list", "rm", []string{"-rf", "/"}, "not in the hub's allow-list"},
		{"arguments outside the pattern", "echo", []string{"$(id)"}, "match none"},
		{"an extra argument", "echo", []string{"a", "b"}, "match none"},
	} {
		t.Run(tc.name+" is refused by the hub and audited on both sides", func(t *testing.T) {
			res, row := hubExec(t, m, workflows.HubCommandInput{Device: dev, Account: acme, AskedBy: "test", Command: tc.command, Args: tc.args})
			if !strings.Contains(res.Refused, tc.want) || res.RefusedBy != "hub" || len(res.Stdout) > 0 {
				t.Fatalf("%+v", res)
			}
			if row.Refused != res.Refused || row.RefusedBy != store.RefusedByHub || row.ExitCode != nil {
				t.Fatalf("cloud audit %+v", row)
			}
			if lines := hubLines(t, h, res.ID); len(lines) != 1 || lines[0].Event != hubcmd.EventRefused || lines[0].Refused != res.Refused {
				t.Fatalf("hub audit %+v", lines)
			}
		})
	}
	t.Run("10 MB of output comes back bounded", func(t *testing.T) {
		res, row := hubExec(t, m, workflows.HubCommandInput{Device: dev, Account: acme, AskedBy: "test", Command: "zeros", Args: []string{"-c", "10485760", "/dev/zero"}})
		if res.Refused != "" || res.Error != "" || !res.Truncated || res.BytesOut != 10<<20 || len(res.Stdout) != 65536+len(hubcmd.TruncatedMarker) {
			t.Fatalf("refused %q error %q truncated %v bytes %d kept %d", res.Refused, res.Error, res.Truncated, res.BytesOut, len(res.Stdout))
		}
		if row.BytesOut != 10<<20 || !row.Truncated || row.ExitCode == nil || *row.ExitCode != 0 {
			t.Fatalf("cloud audit %+v", row)
		}
	})
	t.Run("a command past its timeout is killed and its exit reported", func(t *testing.T) {
		start := time.Now()
		res, row := hubExec(t, m, workflows.HubCommandInput{Device: dev, Account: acme, AskedBy: "test", Command: "sleep", Args: []string{"60"}})
		if !res.TimedOut || res.ExitCode != -1 || res.Refused != "" || time.Since(start) > 20*time.Second {
			t.Fatalf("%+v after %s", res, time.Since(start))
		}
		if !row.TimedOut || row.ExitCode == nil || *row.ExitCode != -1 {
			t.Fatalf("cloud audit %+v", row)
		}
	})
	t.Run("a hub without an allow-list runs nothing", func(t *testing.T) {
		res, row := hubExec(t, m, workflows.HubCommandInput{Device: bare, Account: acme, AskedBy: "test", Command: "echo", Args: []string{"x"}})
		if !strings.Contains(res.Refused, "no allow-list") || res.RefusedBy != "hub" || row.RefusedBy != store.RefusedByHub {
			t.Fatalf("%+v %+v", res, row)
		}
		if lines := hubLines(t, hb, res.ID); len(lines) != 1 || lines[0].Event != hubcmd.EventRefused {
			t.Fatalf("hub audit %+v", lines)
		}
	})
	t.Run("a hub that is offline: nothing ran, and the error says so", func(t *testing.T) {
		res, row := hubExec(t, m, workflows.HubCommandInput{Device: harness.UniqueID("gpu-off"), Operator: true, AskedBy: "operator", Command: "echo", Args: []string{"x"}})
		if res.RefusedBy != "cloud" {
			t.Fatalf("unknown device: %+v", res)
		}
		off := harness.UniqueID("gpu-off")
		p.Enroll(t, m.Store, pki.Identity{DeviceID: off, Account: acme}, time.Hour)
		res, row = hubExec(t, m, workflows.HubCommandInput{Device: off, Operator: true, AskedBy: "operator", Command: "echo", Args: []string{"x"}, Pickup: time.Second})
		if !strings.Contains(res.Error, "did not take the request") || row.Error != res.Error || row.ExitCode != nil {
			t.Fatalf("%+v %+v", res, row)
		}
	})
	t.Run("through the API the account comes from the token", func(t *testing.T) {
		url, tokens := customerAPI(t, m, acme, bob)
		post := func(token, device, body string) (int, map[string]any) {
			req, _ := http.NewRequest(http.MethodPost, url+"/v1/hubs/"+device+"/commands", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var v map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&v)
			return resp.StatusCode, v
		}
		code, v := post(tokens[acme], dev, `{"command": "echo", "args": ["api"]}`)
		if code != 200 || v["stdout"] != "YXBpCg==" || v["exit_code"] != 0.0 {
			t.Fatalf("owner: %d %v", code, v)
		}
		before, _ := m.Store.HubCommands(context.Background(), dev, 1000)
		code, v = post(tokens[bob], dev, `{"command": "echo", "args": ["pwned"]}`)
		code2, v2 := post(tokens[bob], "no-such-gpu", `{"command": "echo", "args": ["pwned"]}`)
		msg := func(v map[string]any) string {
			e, _ := v["error"].(map[string]any)
			s, _ := e["message"].(string)
			return s
		}
		if code != 404 || code2 != 404 || msg(v) != "no device "+dev+" in account "+bob || msg(v2) != "no device no-such-gpu in account "+bob {
			t.Fatalf("bob: %d %v; unknown device: %d %v", code, v, code2, v2)
		}
		after, _ := m.Store.HubCommands(context.Background(), dev, 1000)
		if len(after) != len(before)+1 || after[0].Account != bob || after[0].RefusedBy != store.RefusedByCloud || after[0].AskedBy != "account "+bob+" (API)" {
			t.Fatalf("bob's request is not audited: %+v", after[0])
		}
		code, v = post(tokens[acme], dev, `{"command": "echo", "args": ["a;b"]}`)
		if code != 403 || !strings.Contains(msg(v), "match none") {
			t.Fatalf("outside the pattern: %d %v", code, v)
		}
		code, v = post(tokens[acme], dev, `{"command": "echo", "shell": true}`)
		if code != 400 {
			t.Fatalf("unknown field: %d %v", code, v)
		}
	})
	t.Run("si hub exec and si hub commands", func(t *testing.T) {
		si := func(args ...string) (string, string, int) {
			var out, errb strings.Builder
			code := cli.Main(args, &out, &errb)
			return out.String(), errb.String(), code
		}
		tmp := []string{"--temporal-address", harness.Temporal(t), "--namespace", devstack.Namespace, "--device", dev}
		out, errs, code := si(append(append([]string{"hub", "exec"}, tmp...), "--asked-by", "cli test", "--", "echo", "cli")...)
		if code != 0 || out != "cli\n" {
			t.Fatalf("exec: exit %d %q %q", code, out, errs)
		}
		out, errs, code = si(append(append([]string{"hub", "exec"}, tmp...), "--", "echo", "-n")...)
		if code != 3 || out != "" || !strings.Contains(errs, "refused by the hub") || !strings.Contains(errs, "match none") {
			t.Fatalf("a flag smuggled as the word: exit %d %q %q", code, out, errs)
		}
		out, errs, code = si(append(append([]string{"hub", "exec"}, tmp...), "--account", bob, "--json", "--", "echo", "x")...)
		var res workflows.HubCommandResult
		if code != 3 || json.Unmarshal([]byte(out), &res) != nil || res.RefusedBy != "cloud" {
			t.Fatalf("bob with --json: exit %d %q %q", code, out, errs)
		}
		out, errs, code = si(append(append([]string{"hub", "exec"}, tmp...), "--timeout", "200ms", "--", "sleep", "5")...)
		if code != 1 || !strings.Contains(errs, "killed at its timeout") {
			t.Fatalf("timeout: exit %d %q %q", code, out, errs)
		}
		out, errs, code = si("hub", "commands", "--commands", h.AllowList, "--json")
		var v struct {
			Commands []hubcmd.Entry     `json:"commands"`
			Recent   []hubcmd.AuditLine `json:"recent"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &v) != nil || len(v.Commands) != 3 || len(v.Recent) == 0 {
			t.Fatalf("commands --json: exit %d %q %q", code, out, errs)
		}
		last := v.Recent[len(v.Recent)-1]
		if last.Event != hubcmd.EventFinished || !last.TimedOut || last.Command != "sleep" {
			t.Fatalf("last audit line %+v", last)
		}
		out, errs, code = si("hub", "commands", "--commands", h.AllowList)
		if code != 0 || !strings.Contains(out, "zeros") || !strings.Contains(out, "cli test") || !strings.Contains(out, "killed at its timeout") {
			t.Fatalf("commands: exit %d %q %q", code, out, errs)
		}
		out, errs, code = si("hub", "audit", "--device", dev, "--database-url", m.Store.Pool.Config().ConnString(), "--json")
		var rows []store.HubCommand
		if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) < 5 || rows[0].Command != "sleep" || !rows[0].TimedOut {
			t.Fatalf("audit --json: exit %d %q %q", code, out, errs)
		}
		out, errs, code = si("hub", "audit", "--device", dev, "--database-url", m.Store.Pool.Config().ConnString())
		if code != 0 || !strings.Contains(out, "refused by the cloud: no device "+dev+" in account "+bob) || !strings.Contains(out, "cli test") {
			t.Fatalf("audit: exit %d %q %q", code, out, errs)
		}
		out, _, code = si("hub", "commands", "--commands", hb.AllowList)
		if code != 0 || !strings.HasPrefix(out, "nothing runs: no allow-list") {
			t.Fatalf("commands without a list: exit %d %q", code, out)
		}
	})
	if r := b.Proxy.Refused(); len(r) > 0 {
		t.Fatalf("the proxy refused the hub's own worker: %v", r)
	}
}

// TestACancelledHubCommandStopsOnTheHub is the operator's test: a request
// interrupted while its command runs on the hub (si hub exec's Ctrl-C, the
// API's caller gone) is cancelled, and the cancellation reaches the hub:
// the command is killed within seconds, not left to run its minute, and
// both audits say so. Cancelled before an offline hub took it, nothing
// runs and the cloud's audit row is finished, not left in flight.
func TestACancelledHubCommandStopsOnTheHub(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	acme := harness.UniqueID("acme")
	dev, h := startCommandHub(t, m, p, b.Addr().String(), acme, `{"commands": [
		{"name": "long", "path": "/bin/sh", "args": [["-c", "echo $$; exec sleep 60"]], "timeout": "2m"}]}`)

	t.Run("while it runs", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			// Interrupted once the hub has started the command.
			deadline := time.Now().Add(time.Minute)
			for time.Now().Before(deadline) {
				lines, _ := hubcmd.Recent(h.Audit.Path(), 10)
				for _, l := range lines {
					if l.Event == hubcmd.EventStarted {
						time.Sleep(300 * time.Millisecond)
						cancel()
						return
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		res, err := runner.HubCommand(ctx, m.Client, workflows.HubCommandInput{Device: dev, Operator: true, AskedBy: "operator",
			Command: "long", Args: []string{"-c", "echo $$; exec sleep 60"}, Timeout: 2 * time.Minute})
		interrupted := time.Now()
		if err != nil {
			t.Fatalf("the interrupted request: %v", err)
		}
		if !res.Cancelled || res.ExitCode != -1 || res.TimedOut || res.Refused != "" || res.Error != "" {
			t.Fatalf("the interrupted request's result: %+v", res)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
		if err != nil {
			t.Fatalf("the command printed %q, not its pid", res.Stdout)
		}
		for syscall.Kill(pid, 0) == nil {
			if time.Since(interrupted) > 5*time.Second {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("the command (pid %d) still runs after its request was cancelled", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
		row, err := m.Store.HubCommandByID(context.Background(), res.ID)
		if err != nil || !row.Cancelled || row.FinishedAt == nil || row.ExitCode == nil || *row.ExitCode != -1 || row.Error != "" {
			t.Fatalf("cloud audit %+v %v", row, err)
		}
		lines := hubLines(t, h, res.ID)
		if len(lines) != 2 || lines[1].Event != hubcmd.EventFinished || !lines[1].Cancelled {
			t.Fatalf("hub audit %+v", lines)
		}
		// The cancelled history replays; with SI_WRITE_HISTORY it becomes
		// the one the workflows package's replay test reads.
		replays(t, m.Client, res.ID, workflows.HubCommandWorkflow, "hubcommand_cancelled_history_v0.json")
	})
	t.Run("before an offline hub takes it", func(t *testing.T) {
		off := harness.UniqueID("gpu-off")
		p.Enroll(t, m.Store, pki.Identity{DeviceID: off, Account: acme}, time.Hour)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		res, err := runner.HubCommand(ctx, m.Client, workflows.HubCommandInput{Device: off, Operator: true, AskedBy: "operator",
			Command: "long", Args: []string{"-c", "x"}, Pickup: time.Hour})
		if err != nil || !res.Cancelled || !strings.Contains(res.Error, "nothing ran") {
			t.Fatalf("cancelled before the hub took it: %+v %v", res, err)
		}
		row, err := m.Store.HubCommandByID(context.Background(), res.ID)
		if err != nil || !row.Cancelled || row.FinishedAt == nil || row.ExitCode != nil || !strings.Contains(row.Error, "nothing ran") {
			t.Fatalf("cloud audit %+v %v", row, err)
		}
	})
}
