package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/cli"
	"github.com/superinstance/mesh/internal/client"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// customerAPI serves the API for m the way si server's api role does, and
// issues a token for each account.
func customerAPI(t *testing.T, m *harness.Mesh, accounts ...string) (string, map[string]string) {
	t.Helper()
	srv := httptest.NewServer((&api.Server{Store: m.Store, Temporal: m.Client, Blob: m.Blob, ServedModels: m.Inference.LLM.BaseModels}).Handler())
	t.Cleanup(srv.Close)
	tokens := map[string]string{}
	for _, a := range accounts {
		m.Account(t, a)
		tok, err := m.Store.CreateAPIToken(context.Background(), a, "test")
		if err != nil {
			t.Fatal(err)
		}
		tokens[a] = tok
	}
	return srv.URL, tokens
}

// customerEnv leaves the client nothing but its own config directory: no
// SI_ setting (no Temporal, database or object store), no si dev to find.
func customerEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SI_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	for _, kv := range os.Environ() {
		for _, bad := range []string{"SI_TEMPORAL", "SI_DATABASE", "SI_S3", "DATABASE_URL", "AWS_ACCESS_KEY", "AWS_SECRET"} {
			if strings.HasPrefix(kv, bad) {
				t.Fatalf("the client's environment carries %s", kv)
			}
		}
	}
}

func si(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := cli.Execute(ctx, &cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}, args)
	return out.String() + errb.String(), err
}

// The customer's si, logged in with a token, drives the mesh through the
// API alone; a second account's token sees and changes none of it.
func TestCustomerCommandsThroughTheAPI(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 4))
	url, tokens := customerAPI(t, m, "alice", "bob")
	customerEnv(t)

	out, err := si(t, "login", "--api-url", url, "--token", tokens["alice"])
	if err != nil || !strings.Contains(out, "as account alice") {
		t.Fatalf("si login: %v\n%s", err, out)
	}
	out, err = si(t, "ask", "--json", "What is the capital of France? [sim:agree]")
	if err != nil {
		t.Fatalf("si ask: %v\n%s", err, out)
	}
	var run struct {
		WorkflowID string `json:"workflow_id"`
		Status     string `json:"status"`
		Account    string `json:"account"`
	}
	if err := json.Unmarshal([]byte(out), &run); err != nil || run.Status != "consensus" || run.Account != "alice" {
		t.Fatalf("si ask --json: %v\n%s", err, out)
	}
	out, err = si(t, "ask", "--max-rounds", "2", "Is P equal to NP? [sim:disagree]")
	for _, want := range []string{"pathos", "round 1", "round 2", "arbiter", "status    arbiter_resolved", "workflow  consensus-"} {
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("si ask lacks %q: %v\n%s", want, err, out)
		}
	}
	if out, err = si(t, "ask", "--follow", run.WorkflowID); err != nil || !strings.Contains(out, "status    consensus") {
		t.Fatalf("si ask --follow: %v\n%s", err, out)
	}
	if out, err = si(t, "ask", "--continue", run.WorkflowID, "and its population? [sim:agree]"); err != nil || !strings.Contains(out, "status    consensus") {
		t.Fatalf("si ask --continue: %v\n%s", err, out)
	}
	out, err = si(t, "ask", "x [sim:malformed]")
	if err == nil || !strings.Contains(err.Error(), "pathos's output is unusable after one repair attempt") || strings.Contains(err.Error(), "activity error") {
		t.Fatalf("a failed run: %v\n%s", err, out)
	}

	out, err = si(t, "balance", "--json")
	var bal client.Balance
	if err != nil || json.Unmarshal([]byte(out), &bal) != nil || bal.Account != "alice" || bal.Unbilled <= 0 {
		t.Fatalf("si balance: %v\n%s", err, out)
	}
	out, err = si(t, "usage", "--json")
	var usage []client.UsageEvent
	if err != nil || json.Unmarshal([]byte(out), &usage) != nil || len(usage) < 3 {
		t.Fatalf("si usage: %v\n%s", err, out)
	}

	a := adapter(t, "support-bot", 4, 64<<10)
	out, err = si(t, "push", "--expert", a.Dir, "--json")
	var pushed struct {
		ID       string `json:"id"`
		Existing bool   `json:"existing"`
		State    string `json:"state"`
	}
	if err != nil || json.Unmarshal([]byte(out), &pushed) != nil || !lora.ValidID(pushed.ID) || pushed.State != "available" {
		t.Fatalf("si push: %v\n%s", err, out)
	}
	if l, err := m.Store.LoRAFor(context.Background(), "alice", pushed.ID); err != nil || l.Owner != "alice" ||
		!strings.HasPrefix(l.ObjectKey, "adapters/alice/") {
		t.Fatalf("registered %+v, %v", l, err)
	}
	if out, err = si(t, "push", "--expert", a.Dir); err != nil || !strings.Contains(out, "already registered") || !strings.Contains(out, "already stored") {
		t.Fatalf("second push: %v\n%s", err, out)
	}
	// An adapter for a model the mesh does not serve is refused before any byte is sent.
	other := filepath.Join(t.TempDir(), "other")
	if err := lora.Scaffold(other, lora.ScaffoldOptions{BaseModel: "not-served", Rank: 4, Hidden: 64, Bytes: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	if out, err = si(t, "push", "--expert", other); err == nil || !strings.Contains(err.Error(), `base model "not-served" is not served`) ||
		strings.Contains(out, "uploaded") {
		t.Fatalf("push for another base model: %v\n%s", err, out)
	}
	if out, err = si(t, "lora", "ls"); err != nil || !strings.Contains(out, pushed.ID) {
		t.Fatalf("si lora ls: %v\n%s", err, out)
	}

	out, err = si(t, "invite", "--project", "alpha", "--role", "viewer", "--quota", "0.10", "--json")
	var inv client.Invite
	if err != nil || json.Unmarshal([]byte(out), &inv) != nil || inv.State != "pending" || !strings.Contains(inv.Link, "/join/") {
		t.Fatalf("si invite: %v\n%s", err, out)
	}
	if out, err = si(t, "invite", "ls"); err != nil || !strings.Contains(out, inv.ID) {
		t.Fatalf("si invite ls: %v\n%s", err, out)
	}

	// Bob, by SI_TOKEN: none of alice's runs, adapters or balance.
	t.Setenv("SI_TOKEN", tokens["bob"])
	t.Setenv("SI_API_URL", url)
	if out, err = si(t, "whoami"); err != nil || !strings.Contains(out, "account bob") {
		t.Fatalf("si whoami as bob: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"ask", "--follow", run.WorkflowID},
		{"ask", "--continue", run.WorkflowID, "tell me more [sim:agree]"},
		{"lora", "show", pushed.ID},
		{"lora", "rm", pushed.ID},
		{"ask", "--lora", pushed.ID, "use it [sim:agree]"},
	} {
		out, err := si(t, args...)
		if err == nil || !strings.Contains(err.Error(), "not found") && !strings.Contains(err.Error(), "no consensus") {
			t.Errorf("bob: si %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if strings.Contains(out, "status    consensus") {
			t.Errorf("bob: si %s showed alice's run:\n%s", strings.Join(args, " "), out)
		}
	}
	if out, err = si(t, "invite", "revoke", inv.ID); err == nil || !strings.Contains(err.Error(), "no invite") {
		t.Errorf("bob revoking alice's invite: %v\n%s", err, out)
	}
	if out, err = si(t, "invite", "ls"); err != nil || strings.Contains(out, inv.ID) {
		t.Errorf("bob's invites: %v\n%s", err, out)
	}
	// No flag names another account.
	for _, args := range [][]string{{"balance", "--account", "alice", "--json"}, {"usage", "--account", "alice", "--json"},
		{"lora", "ls", "--account", "alice", "--json"}} {
		if out, err := si(t, args...); err == nil || strings.Contains(out, `"alice"`) || strings.Contains(out, pushed.ID) {
			t.Errorf("bob: si %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if out, err = si(t, "balance", "--json"); err != nil || !strings.Contains(out, `"account": "bob"`) {
		t.Fatalf("bob's balance: %v\n%s", err, out)
	}
	if out, err = si(t, "lora", "ls", "--json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("bob's adapters: %v\n%s", err, out)
	}
	if l, err := m.Store.LoRAFor(context.Background(), "alice", pushed.ID); err != nil || l.State != "available" {
		t.Fatalf("alice's adapter after bob: %+v, %v", l, err)
	}

	// Alice removes her own.
	t.Setenv("SI_TOKEN", "")
	if out, err = si(t, "invite", "revoke", inv.ID); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("si invite revoke: %v\n%s", err, out)
	}
	if out, err = si(t, "lora", "rm", pushed.ID); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("si lora rm: %v\n%s", err, out)
	}
	if out, err = si(t, "logout"); err != nil {
		t.Fatalf("si logout: %v\n%s", err, out)
	}
	if _, err = si(t, "balance"); !errors.Is(err, client.ErrNoCredentials) {
		t.Fatalf("si balance after logout: %v", err)
	}
}

// A presigned part URL writes its own key, upload and part only.
func TestPresignedURLWritesOnlyItsKey(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 4))
	url, tokens := customerAPI(t, m, "alice", "bob")
	ctx := context.Background()
	alice, _ := client.New(client.Credentials{APIURL: url, Token: tokens["alice"]})
	bob, _ := client.New(client.Credentials{APIURL: url, Token: tokens["bob"]})
	const size = 6 << 20
	sum := strings.Repeat("ab", 32)
	plan := startUpload(t, url, tokens["alice"], sum, size)
	if len(plan.Parts) != 2 || !strings.Contains(plan.Parts[0].URL, "/adapters/alice/"+sum+"/") {
		t.Fatalf("plan %+v", plan)
	}
	put := func(u string, n int64) int {
		req, _ := http.NewRequest("PUT", u, io.LimitReader(zeros{}, n))
		req.ContentLength = n
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	p := plan.Parts[0]
	for name, u := range map[string]string{
		"another owner's key": strings.Replace(p.URL, "/adapters/alice/", "/adapters/bob/", 1),
		"another object":      strings.Replace(p.URL, "/"+sum+"/", "/"+strings.Repeat("cd", 32)+"/", 1),
		"another part":        strings.Replace(p.URL, "partNumber=1", "partNumber=2", 1),
		"no signature":        p.URL[:strings.Index(p.URL, "?")] + "?partNumber=1&uploadId=" + plan.UploadID,
	} {
		if code := put(u, p.Size); code != http.StatusForbidden {
			t.Errorf("PUT with %s's URL: %d, want 403", name, code)
		}
	}
	if code := put(p.URL, p.Size+1); code == http.StatusOK {
		t.Error("PUT of more bytes than signed succeeded")
	}
	if code := put(p.URL, p.Size); code != http.StatusOK {
		t.Fatalf("PUT with the URL as given: %d", code)
	}
	// Bob cannot complete alice's upload: his key is derived from his account.
	_, err := bob.PushAdapter(ctx, client.PushRequest{SHA256: sum, Size: size, Name: "x", Config: json.RawMessage(`{}`),
		UploadID: plan.UploadID, Parts: []client.CompletedPart{{Number: 1, ETag: "x"}}})
	if err == nil {
		t.Fatal("bob completed alice's upload")
	}
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status >= 500 {
		t.Fatalf("bob completing alice's upload: %v", err)
	}
	_ = alice
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func startUpload(t *testing.T, url, token, sum string, size int64) client.Upload {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"sha256": sum, "size_bytes": size, "part_size_bytes": 5 << 20})
	req, _ := http.NewRequest("POST", url+"/v1/adapters/uploads", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var plan client.Upload
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&plan) != nil {
		t.Fatalf("start upload: %s", resp.Status)
	}
	return plan
}

// failAfter lets n part uploads through, then cuts the link.
type failAfter struct {
	n    int32
	seen atomic.Int32
}

func (f *failAfter) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.seen.Add(1) > f.n {
		return nil, errors.New("link down")
	}
	return http.DefaultTransport.RoundTrip(r)
}

// An upload cut after two of four parts continues with the two others.
func TestInterruptedUploadResumes(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 4))
	url, tokens := customerAPI(t, m, "alice")
	ctx := context.Background()
	a := adapter(t, "big", 8, 3*(5<<20)+4096)
	f, err := os.Open(a.WeightsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum, _ := client.SHA256(f)
	c, _ := client.New(client.Credentials{APIURL: url, Token: tokens["alice"]})
	c.Storage = &http.Client{Transport: &failAfter{n: 2}}
	o := client.UploadOptions{PartSize: 5 << 20, Parallel: 1}
	if _, err := c.UploadAdapter(ctx, f, a.Size, sum, o); err == nil || !strings.Contains(err.Error(), "run the push again to resume") {
		t.Fatalf("interrupted upload: %v", err)
	}
	c.Storage = nil
	var last int64
	o.Progress = func(done, _ int64) { last = done }
	up, err := c.UploadAdapter(ctx, f, a.Size, sum, o)
	if err != nil {
		t.Fatal(err)
	}
	if up.Resumed != 2*(5<<20) || len(up.Parts) != 4 || last != a.Size {
		t.Fatalf("resumed %d bytes of %d parts (progress %d); want 2 parts' worth of 4", up.Resumed, len(up.Parts), last)
	}
	res, err := c.PushAdapter(ctx, client.PushRequest{SHA256: sum, Size: a.Size, Name: a.Name, Config: a.ConfigJSON, UploadID: up.UploadID, Parts: up.Parts})
	if err != nil || res.State != "available" {
		t.Fatalf("push after resume: %+v, %v", res, err)
	}
}
