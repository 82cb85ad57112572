package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/agent"
)

const body = `{"prompt":"spend this user's credits","request_id":"from-a-page"}`

// api serves the local API of an agent that is not connected, so an
// accepted escalation stays queued where the test can count it.
func api(t *testing.T) (*agent.Agent, *httptest.Server, string) {
	t.Helper()
	secret, err := agent.LoadOrCreateSecret(filepath.Join(t.TempDir(), "hub", agent.SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	a := agent.New(agent.Options{})
	srv := httptest.NewServer(agent.Handler(a, secret))
	t.Cleanup(srv.Close)
	return a, srv, secret
}

func do(t *testing.T, srv *httptest.Server, method, path, body string, edit func(*http.Request)) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	edit(req)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	return resp.StatusCode, line
}

// TestLocalAPIRefusesWebPages sends what a page the hub's user visits can
// send: none of it starts an escalation.
func TestLocalAPIRefusesWebPages(t *testing.T) {
	a, srv, secret := api(t)
	good := func(r *http.Request) {
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+secret)
	}
	cases := []struct {
		name string
		edit func(*http.Request)
		code int
		msg  string
	}{
		{"a form's text/plain POST", func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, 401, "missing the hub API secret"},
		{"text/plain with the secret", func(r *http.Request) { good(r); r.Header.Set("Content-Type", "text/plain;charset=UTF-8") }, 415, "application/json"},
		{"no content type", func(r *http.Request) { good(r); r.Header.Del("Content-Type") }, 415, "application/json"},
		{"a rebinding Host", func(r *http.Request) { good(r); r.Host = "attacker.example:7450" }, 421, "localhost"},
		{"a rebinding Host without port", func(r *http.Request) { good(r); r.Host = "127.0.0.1.attacker.example" }, 421, "localhost"},
		{"no secret", func(r *http.Request) { good(r); r.Header.Del("Authorization") }, 401, "missing"},
		{"a wrong secret", func(r *http.Request) {
			good(r)
			r.Header.Set("Authorization", "Bearer "+strings.Repeat("0", len(secret)))
		}, 401, "wrong"},
		{"the secret without Bearer", func(r *http.Request) { good(r); r.Header.Set("Authorization", secret) }, 401, "wrong"},
		{"a page's Origin", func(r *http.Request) { good(r); r.Header.Set("Origin", "https://attacker.example") }, 403, "web pages"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, line := do(t, srv, http.MethodPost, "/v1/escalate", body, tc.edit)
			var e struct {
				Error struct{ Message string } `json:"error"`
			}
			if code != tc.code || json.Unmarshal([]byte(line), &e) != nil || !strings.Contains(e.Error.Message, tc.msg) {
				t.Errorf("answered %d %s, want %d with %q", code, line, tc.code, tc.msg)
			}
		})
	}
	if q := a.Status().Queued; q != 0 {
		t.Fatalf("%d escalations started by refused requests", q)
	}
	if code, _ := do(t, srv, http.MethodGet, "/v1/status", "", func(r *http.Request) { r.Host = "attacker.example" }); code != 421 {
		t.Errorf("status through a rebinding Host: %d", code)
	}
	if code, _ := do(t, srv, http.MethodGet, "/v1/status", "", func(*http.Request) {}); code != 401 {
		t.Errorf("status without the secret: %d", code)
	}
}

// TestLocalAPIAcceptsTheCLI: a request with the secret, JSON and a loopback
// Host, under each name of loopback, is taken (and queued while the link is down).
func TestLocalAPIAcceptsTheCLI(t *testing.T) {
	a, srv, secret := api(t)
	for i, host := range []string{"", "localhost", "localhost:7450", "127.0.0.1", "[::1]:7450", "[::1]", "LOCALHOST"} {
		req := strings.Replace(body, "from-a-page", fmt.Sprintf("cli-%d", i), 1)
		code, line := do(t, srv, http.MethodPost, "/v1/escalate", req, func(r *http.Request) {
			r.Header.Set("Content-Type", "application/json; charset=utf-8")
			r.Header.Set("Authorization", "Bearer "+secret)
			if host != "" {
				r.Host = host
			}
		})
		if code != 200 || !strings.Contains(line, "queued") {
			t.Fatalf("Host %q: %d %s", host, code, line)
		}
	}
	if q := a.Status().Queued; q != 7 {
		t.Fatalf("queued %d, want 7", q)
	}
}

func TestSecretFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dir", agent.SecretFile)
	s1, err := agent.LoadOrCreateSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || len(s1) != 64 {
		t.Fatalf("secret file %v mode %v, secret of %d characters", err, fi.Mode(), len(s1))
	}
	if s2, err := agent.LoadOrCreateSecret(path); err != nil || s2 != s1 {
		t.Fatalf("second start made a new secret (%v)", err)
	}
	if s, err := agent.ReadSecret(path); err != nil || s != s1 {
		t.Fatalf("ReadSecret: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.ReadSecret(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable secret: %v", err)
	}
	short := filepath.Join(t.TempDir(), agent.SecretFile)
	if err := os.WriteFile(short, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadOrCreateSecret(short); err == nil {
		t.Fatal("a 7-character secret accepted")
	}
	if _, err := agent.ReadSecret(filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "writes it when it starts") {
		t.Fatalf("missing file: %v", err)
	}
}
