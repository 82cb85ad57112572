package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// process is an si server started as its own OS process.
type process struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	exited chan struct{}
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startServer runs `si server` with args in env until cleanup and waits for
// its /ready on metricsAddr.
func startServer(t *testing.T, si string, env []string, metricsAddr string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(si, append([]string{"server", "--metrics-listen", metricsAddr}, args...)...), exited: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("si server %s:\n%s", strings.Join(args, " "), p.output())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.exited:
			t.Fatalf("si server %s exited before it was ready:\n%s", strings.Join(args, " "), p.output())
		default:
		}
		if resp, err := http.Get("http://" + metricsAddr + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("si server %s not ready after a minute:\n%s", strings.Join(args, " "), p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// customerEnvIn is a customer's whole environment: PATH and a home of its
// own, nothing else. No SI_ setting names Temporal, PostgreSQL or S3.
func customerEnvIn(t *testing.T, home string, extra ...string) []string {
	t.Helper()
	env := append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"TMPDIR=" + os.TempDir()}, extra...)
	for _, kv := range env {
		for _, bad := range []string{"SI_TEMPORAL", "SI_NAMESPACE", "SI_DATABASE", "SI_S3", "SI_STRIPE", "SI_SMTP", "DATABASE_URL", "AWS_"} {
			if strings.HasPrefix(kv, bad) {
				t.Fatalf("the customer's environment carries %s", kv)
			}
		}
	}
	return env
}

// run runs si with env and stdin, and returns its combined output.
func run(t *testing.T, si string, env []string, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, si, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// A customer's si, holding only an API token (and later a guest secret),
// drives every user command against si server processes with separate
// api and worker roles; a second account's token finds none of it.
func TestCustomerAgainstServerRoles(t *testing.T) {
	si, _ := binaries(t)
	// The operator's services, from the one harness.
	temporalAddr := harness.Temporal(t)
	dbURL := harness.DatabaseURL(t)
	bc := harness.BlobConfig(t)
	mb := harness.Mailpit(t)
	stripeURL := harness.StripeMock(t)
	_, llmURL := harness.Simulator(t, simulator.Options{})
	apiAddr, workerAddr := freeAddr(t), freeAddr(t)
	apiURL := "http://" + apiAddr

	operator := append(cleanEnv(), "HOME="+t.TempDir(),
		"SI_TEMPORAL_ADDRESS="+temporalAddr, "SI_NAMESPACE="+devstack.Namespace, "SI_DATABASE_URL="+dbURL,
		"SI_S3_ENDPOINT="+bc.Endpoint, "SI_S3_REGION="+bc.Region, "SI_S3_BUCKET="+bc.Bucket,
		"SI_S3_ACCESS_KEY="+bc.AccessKey, "SI_S3_SECRET_KEY="+bc.SecretKey,
		"SI_STRIPE_API_BASE="+stripeURL, "SI_STRIPE_KEY=sk_test_123",
		"SI_SMTP_ADDR="+mb.SMTP, "SI_LLM_BASE_URL="+llmURL, "SI_PUBLIC_URL="+apiURL,
		"SI_LORA_CACHE_DIR="+t.TempDir())
	op := func(args ...string) string {
		t.Helper()
		out, err := run(t, si, operator, "", args...)
		if err != nil {
			t.Fatalf("si %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	// Accounts first: this migrates the database before the servers share it.
	for _, a := range []string{"alice", "bob"} {
		if out := op("account", "create", "--account", a, "--email", a+"@example.com"); !strings.Contains(out, a) {
			t.Fatalf("si account create %s:\n%s", a, out)
		}
	}
	aliceToken := strings.TrimSpace(op("account", "token", "--account", "alice"))
	bobToken := strings.TrimSpace(op("account", "token", "--account", "bob"))
	if !strings.HasPrefix(aliceToken, "si_") || strings.Contains(aliceToken, "\n") {
		t.Fatalf("si account token printed %q", aliceToken)
	}

	startServer(t, si, operator, apiAddr, "--roles", "api")
	startServer(t, si, operator, workerAddr, "--roles", "worker")
	// The bridge hubs dial, a process of its own with the mesh CA.
	caDir := filepath.Join(t.TempDir(), "ca")
	op("ca", "init", "--ca-dir", caDir)
	bridgeUDP := freeAddr(t)
	if out := startServer(t, si, operator, freeAddr(t), "--roles", "bridge", "--ca-dir", caDir, "--bridge-listen", bridgeUDP).output(); !strings.Contains(out, "bridge on "+bridgeUDP) {
		t.Fatalf("si server --roles bridge does not say it listens on %s:\n%s", bridgeUDP, out)
	}

	alice := customerEnvIn(t, t.TempDir())
	sh := func(env []string, stdin string, args ...string) string {
		t.Helper()
		out, err := run(t, si, env, stdin, args...)
		if err != nil {
			t.Fatalf("si %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	fails := func(env []string, want string, args ...string) {
		t.Helper()
		out, err := run(t, si, env, "", args...)
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("si %s: want a failure saying %q, got %v:\n%s", strings.Join(args, " "), want, err, out)
		}
	}

	if out := sh(alice, aliceToken+"\n", "login", "--with-token", "--api-url", apiURL); !strings.Contains(out, "as account alice") {
		t.Fatalf("si login:\n%s", out)
	}
	if out := sh(alice, "", "whoami"); !strings.Contains(out, "account alice at "+apiURL) {
		t.Fatalf("si whoami:\n%s", out)
	}

	var asked struct {
		WorkflowID string `json:"workflow_id"`
		Status     string `json:"status"`
		Account    string `json:"account"`
	}
	out := sh(alice, "", "ask", "--json", "What is the capital of France? [sim:agree]")
	if err := json.Unmarshal([]byte(out), &asked); err != nil || asked.Status != "consensus" || asked.Account != "alice" {
		t.Fatalf("si ask --json: %v\n%s", err, out)
	}
	if out := sh(alice, "", "ask", "--follow", asked.WorkflowID); !strings.Contains(out, "status    consensus") {
		t.Fatalf("si ask --follow:\n%s", out)
	}
	if out := sh(alice, "", "ask", "--continue", asked.WorkflowID, "And its population? [sim:agree]"); !strings.Contains(out, "status    consensus") {
		t.Fatalf("si ask --continue:\n%s", out)
	}
	fails(alice, "pathos's output is unusable after one repair attempt", "ask", "x [sim:malformed]")

	var bal struct {
		Account  string `json:"account"`
		Unbilled int64  `json:"unbilled_micros"`
	}
	if out := sh(alice, "", "balance", "--json"); json.Unmarshal([]byte(out), &bal) != nil || bal.Account != "alice" || bal.Unbilled <= 0 {
		t.Fatalf("si balance:\n%s", out)
	}
	var usage []struct {
		EventID string `json:"event_id"`
	}
	if out := sh(alice, "", "usage", "--json"); json.Unmarshal([]byte(out), &usage) != nil || len(usage) < 2 {
		t.Fatalf("si usage:\n%s", out)
	}

	// An adapter: written, pushed through presigned URLs, loaded by the worker.
	if out := sh(alice, "", "lora", "new", "bot", "--rank", "4", "--size", "0.1"); !strings.Contains(out, "si push --expert bot") {
		t.Fatalf("si lora new:\n%s", out)
	}
	var pushed struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if out := sh(alice, "", "push", "--expert", "bot", "--json"); json.Unmarshal([]byte(out), &pushed) != nil || pushed.ID == "" || pushed.State != "available" {
		t.Fatalf("si push --expert:\n%s", out)
	}
	if out := sh(alice, "", "lora", "ls"); !strings.Contains(out, pushed.ID) {
		t.Fatalf("si lora ls:\n%s", out)
	}
	if out := sh(alice, "", "lora", "show", pushed.ID); !strings.Contains(out, pushed.ID) || !strings.Contains(out, simulator.ModelSmall) {
		t.Fatalf("si lora show:\n%s", out)
	}

	// An invite, joined by a guest who holds no token at all.
	var inv struct {
		ID    string `json:"id"`
		Token string `json:"token"`
		Link  string `json:"link"`
		State string `json:"state"`
	}
	out = sh(alice, "", "invite", "--project", "alpha", "--role", "editor", "--quota", "2.00", "--json")
	if json.Unmarshal([]byte(out), &inv) != nil || inv.State != "pending" || !strings.HasPrefix(inv.Link, apiURL+"/join/") {
		t.Fatalf("si invite:\n%s", out)
	}
	var pending struct {
		ID string `json:"id"`
	}
	if out := sh(alice, "", "invite", "--project", "alpha", "--role", "viewer", "--quota", "0.10", "--json"); json.Unmarshal([]byte(out), &pending) != nil || pending.ID == "" {
		t.Fatalf("second si invite:\n%s", out)
	}
	if out := sh(alice, "", "invite", "ls"); !strings.Contains(out, inv.ID) || !strings.Contains(out, pending.ID) || !strings.Contains(out, "alpha") {
		t.Fatalf("si invite ls:\n%s", out)
	}
	guest := customerEnvIn(t, t.TempDir(), "SI_API_URL="+apiURL)
	fails(guest, "not logged in", "whoami")
	var joined struct {
		Secret    string `json:"guest_session"`
		SessionID string `json:"session_id"`
	}
	if out := sh(guest, "", "join", inv.Link, "--json"); json.Unmarshal([]byte(out), &joined) != nil || joined.Secret == "" {
		t.Fatalf("si join:\n%s", out)
	}
	if out := sh(guest, "", "ask", "--guest", joined.Secret, "What is a guest? [sim:agree]"); !strings.Contains(out, "status    consensus") {
		t.Fatalf("si ask --guest:\n%s", out)
	}
	fails(guest, "already been used", "join", inv.Link) // used once
	if out := sh(alice, "", "invite", "ls"); !strings.Contains(out, joined.SessionID) {
		t.Fatalf("si invite ls lacks the guest session %s:\n%s", joined.SessionID, out)
	}

	// A handover: the worker emails its recipient.
	out = sh(alice, "", "handover", "start", "--project", "alpha", "--to", "ada@example.com")
	if !strings.Contains(out, "handover ho_") {
		t.Fatalf("si handover start:\n%s", out)
	}
	handover := strings.TrimSuffix(strings.Fields(out[strings.Index(out, "handover ho_")+len("handover "):])[0], ":")
	if out := sh(alice, "", "handover", "ls"); !strings.Contains(out, handover) {
		t.Fatalf("si handover ls:\n%s", out)
	}
	if offer := mb.WaitFor(t, "ada@example.com", 1, 30*time.Second)[0]; !strings.Contains(offer.Text, apiURL+"/handover/") {
		t.Fatalf("handover email without a link to %s:\n%s", apiURL, offer.Text)
	}

	// Bob, by SI_TOKEN alone: none of alice's run, adapter, invite or handover.
	bob := customerEnvIn(t, t.TempDir(), "SI_API_URL="+apiURL, "SI_TOKEN="+bobToken)
	if out := sh(bob, "", "whoami"); !strings.Contains(out, "account bob") {
		t.Fatalf("si whoami as bob:\n%s", out)
	}
	for _, args := range [][]string{
		{"ask", "--follow", asked.WorkflowID},
		{"ask", "--continue", asked.WorkflowID, "tell me more [sim:agree]"},
		{"lora", "show", pushed.ID},
		{"lora", "rm", pushed.ID},
		{"ask", "--lora", pushed.ID, "use it [sim:agree]"},
	} {
		out, err := run(t, si, bob, "", args...)
		if err == nil || !strings.Contains(out, "not found") && !strings.Contains(out, "no consensus") || strings.Contains(out, "status    consensus") {
			t.Errorf("bob: si %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	fails(bob, "no invite", "invite", "revoke", pending.ID)
	fails(bob, "no guest session", "invite", "revoke", joined.SessionID)
	fails(bob, "no handover", "handover", "cancel", handover)
	if out := sh(bob, "", "invite", "ls"); strings.Contains(out, inv.ID) || strings.Contains(out, pending.ID) || strings.Contains(out, joined.SessionID) {
		t.Errorf("bob sees alice's invite:\n%s", out)
	}
	if out := sh(bob, "", "lora", "ls", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("bob sees adapters:\n%s", out)
	}
	if out := sh(bob, "", "handover", "ls"); strings.Contains(out, handover) {
		t.Errorf("bob sees alice's handover:\n%s", out)
	}

	// Alice's tokens are hers: bob cannot revoke one.
	var alices struct {
		Tokens []struct {
			ID      string `json:"id"`
			Current bool   `json:"current"`
		} `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(sh(alice, "", "token", "ls", "--json")), &alices); err != nil || len(alices.Tokens) != 1 || !alices.Tokens[0].Current {
		t.Fatalf("si token ls as alice: %+v, %v", alices, err)
	}
	fails(bob, "no token "+alices.Tokens[0].ID, "token", "revoke", alices.Tokens[0].ID)

	// The operator revokes bob's token: the running api refuses it at once;
	// alice's token, and naming bob's under alice's account, are untouched.
	var bobs struct {
		Tokens []struct {
			ID        string  `json:"id"`
			RevokedAt *string `json:"revoked_at"`
		} `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(op("account", "tokens", "--account", "bob", "--json")), &bobs); err != nil || len(bobs.Tokens) != 1 || bobs.Tokens[0].RevokedAt != nil {
		t.Fatalf("si account tokens --account bob: %+v, %v", bobs, err)
	}
	if out := op("account", "tokens", "--account", "bob"); strings.Contains(out, bobToken) || !strings.Contains(out, bobs.Tokens[0].ID) {
		t.Errorf("si account tokens shows the token or not its id:\n%s", out)
	}
	if out, err := run(t, si, operator, "", "account", "revoke-token", "--account", "alice", "--id", bobs.Tokens[0].ID); err == nil || !strings.Contains(out, "no such token") {
		t.Errorf("revoking bob's token as alice's: %v\n%s", err, out)
	}
	// Bob's token itself under alice's account, given explicitly: refused,
	// not revoked in bob's.
	if out, err := run(t, si, operator, bobToken+"\n", "account", "revoke-token", "--account", "alice", "--id", "-"); err == nil || !strings.Contains(out, "belongs to account bob, not \"alice\"") {
		t.Errorf("revoking bob's token with --account alice: %v\n%s", err, out)
	}
	if out := sh(bob, "", "whoami"); !strings.Contains(out, "account bob") {
		t.Fatalf("bob's token after a refused revocation:\n%s", out)
	}
	// By the token itself, from standard input: it names its account.
	if out, err := run(t, si, operator, bobToken+"\n", "account", "revoke-token", "--id", "-"); err != nil || !strings.Contains(out, "revoked token "+bobs.Tokens[0].ID+" (-) of account bob") {
		t.Fatalf("si account revoke-token --id -: %v\n%s", err, out)
	}
	fails(bob, "unknown or revoked API token", "whoami")
	// A token no account has: said so, not "account dev not found".
	if out, err := run(t, si, operator, bobToken+"x\n", "account", "revoke-token", "--id", "-"); err == nil || !strings.Contains(out, "no account has this token") {
		t.Errorf("revoking a token no account has: %v\n%s", err, out)
	}
	// Given again, a revoked token still names its account.
	if out, err := run(t, si, operator, bobToken+"\n", "account", "revoke-token", "--id", "-"); err != nil || !strings.Contains(out, "of account bob") {
		t.Errorf("si account revoke-token of a revoked token: %v\n%s", err, out)
	}
	if out := sh(alice, "", "whoami"); !strings.Contains(out, "account alice") {
		t.Fatalf("alice after bob's token was revoked:\n%s", out)
	}

	// Alice undoes her own, then logs out.
	if out := sh(alice, "", "handover", "cancel", handover); !strings.Contains(out, handover) || !strings.Contains(out, "cancel") {
		t.Fatalf("si handover cancel:\n%s", out)
	}
	if out := sh(alice, "", "invite", "revoke", pending.ID); !strings.Contains(out, "revoked") {
		t.Fatalf("si invite revoke:\n%s", out)
	}
	fails(guest, "not a valid invite link", "join", pending.ID) // an id is not a token, and the invite is revoked
	if out := sh(alice, "", "invite", "revoke", joined.SessionID); !strings.Contains(out, joined.SessionID) || !strings.Contains(out, "revoked") {
		t.Fatalf("si invite revoke %s:\n%s", joined.SessionID, out)
	}
	fails(guest, "ask the host for a new invite link", "ask", "--guest", joined.Secret, "still here? [sim:agree]")
	if out := sh(alice, "", "lora", "rm", pushed.ID); !strings.Contains(out, "removed") {
		t.Fatalf("si lora rm:\n%s", out)
	}
	// Alice revokes the token she logged in with: the api refuses it at once.
	if out := sh(alice, "", "token", "revoke", alices.Tokens[0].ID); !strings.Contains(out, "revoked token "+alices.Tokens[0].ID) || !strings.Contains(out, "you are using") {
		t.Fatalf("si token revoke:\n%s", out)
	}
	fails(alice, "unknown or revoked API token", "balance")
	if out := sh(alice, "", "logout"); !strings.Contains(out, "logged out") {
		t.Fatalf("si logout:\n%s", out)
	}
	fails(alice, "not logged in", "balance")
}
