package agent_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/agent"
)

// TestUsageAPIRefusesWebPages: POST /v1/usage bills the hub's account, so
// it answers only what si escalate's callers can send: the secret, JSON, a
// loopback Host, no Origin. Nothing refused is queued.
func TestUsageAPIRefusesWebPages(t *testing.T) {
	a, srv, secret := api(t)
	good := func(r *http.Request) {
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+secret)
	}
	rec := `{"event_id":"k-1","model":"llama","prompt_tokens":1000000}`
	for name, edit := range map[string]func(*http.Request){
		"a form's text/plain POST": func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") },
		"text/plain with secret":   func(r *http.Request) { good(r); r.Header.Set("Content-Type", "text/plain") },
		"a page's Origin":          func(r *http.Request) { good(r); r.Header.Set("Origin", "https://attacker.example") },
		"a rebinding Host":         func(r *http.Request) { good(r); r.Host = "attacker.example:7450" },
		"a wrong secret":           func(r *http.Request) { good(r); r.Header.Set("Authorization", "Bearer "+strings.Repeat("0", 64)) },
	} {
		if code, line := do(t, srv, http.MethodPost, "/v1/usage", rec, edit); code < 400 {
			t.Errorf("%s: answered %d %s", name, code, line)
		}
	}
	if q := a.Status().QueuedUsage; q != 0 {
		t.Fatalf("%d usage records queued by refused requests", q)
	}
}

func TestUsageAPIValidates(t *testing.T) {
	a, srv, secret := api(t)
	good := func(r *http.Request) {
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+secret)
	}
	for _, tc := range []struct {
		name, body string
		code       int
		msg        string
	}{
		{"no event id", `{"model":"m","prompt_tokens":1}`, 400, "event_id is required"},
		{"an event id with a slash", `{"event_id":"a/b","model":"m"}`, 400, "event_id"},
		{"no model", `{"event_id":"e"}`, 400, "model is required"},
		{"negative tokens", `{"event_id":"e","model":"m","prompt_tokens":-5}`, 400, "prompt_tokens must be between 0"},
		{"too many tokens", `{"event_id":"e","model":"m","completion_tokens":5000000000}`, 400, "completion_tokens must be between 0"},
		{"an unknown field", `{"event_id":"e","model":"m","account":"someone-else"}`, 400, "unknown field"},
		{"two objects", `{"event_id":"e","model":"m"}{"event_id":"f","model":"m"}`, 400, "one object only"},
		{"a time in the future", `{"event_id":"e","model":"m","at":"2999-01-01T00:00:00Z"}`, 400, "in the future"},
		{"a bad time", `{"event_id":"e","model":"m","at":"yesterday"}`, 400, "RFC 3339"},
		{"a bad project", `{"event_id":"e","model":"m","project":"../x"}`, 400, "project must be"},
		{"a body over the limit", `{"event_id":"e","model":"m","project":"` + strings.Repeat("p", agent.MaxUsageBody) + `"}`, 413, "more than"},
	} {
		code, line := do(t, srv, http.MethodPost, "/v1/usage", tc.body, good)
		if code != tc.code || !strings.Contains(line, tc.msg) {
			t.Errorf("%s: answered %d %s, want %d with %q", tc.name, code, line, tc.code, tc.msg)
		}
	}
	if q := a.Status().QueuedUsage; q != 0 {
		t.Fatalf("%d invalid records queued", q)
	}
	// The same event id twice (a kernel retrying) is one record.
	for range 2 {
		code, line := do(t, srv, http.MethodPost, "/v1/usage", `{"event_id":"call-7","model":"llama-3","prompt_tokens":12,"completion_tokens":30,"at":"2026-12-01T12:00:00Z"}`, good)
		if code != 202 || !strings.Contains(line, `"event_id":"call-7"`) {
			t.Fatalf("a good record: %d %s", code, line)
		}
	}
	if q := a.Status().QueuedUsage; q != 1 {
		t.Fatalf("queued %d, want 1", q)
	}
}

func FuzzDecodeUsage(f *testing.F) {
	f.Add([]byte(`{"event_id":"e-1","model":"m","prompt_tokens":3,"completion_tokens":4,"at":"2026-12-01T12:00:00Z","project":"p"}`))
	f.Add([]byte(`{"event_id":"e","model":"m"} x`))
	f.Add([]byte(`{"event_id":"","model":"m","prompt_tokens":-1}`))
	f.Add([]byte(`[]`))
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		u, err := agent.DecodeUsage(body, now)
		if err != nil {
			return
		}
		if u.GetEventId() == "" || len(u.GetEventId()) > 100 || u.GetModel() == "" || len(u.GetProject()) > 100 ||
			u.GetPromptTokens() > agent.MaxUsageTokens || u.GetCompletionTokens() > agent.MaxUsageTokens ||
			u.GetAtUnixNano() > now.Add(5*time.Minute).UnixNano() || len(body) > agent.MaxUsageBody {
			t.Fatalf("accepted %q as %v", body, u)
		}
	})
}
