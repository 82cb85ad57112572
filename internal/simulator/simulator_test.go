package simulator

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/synapse"
)

func serve(t *testing.T, o Options) (*Server, *llm.Client) {
	t.Helper()
	s := New(o)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, &llm.Client{BaseURL: srv.URL + "/v1"}
}

func chat(t *testing.T, c *llm.Client, model string, p synapse.Prompt) llm.Response {
	t.Helper()
	r, err := c.Chat(context.Background(), llm.Request{Model: model, Messages: []llm.Message{{Role: "system", Content: p.System}, {Role: "user", Content: p.User}}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDeterministicAndShaped(t *testing.T) {
	_, c := serve(t, Options{})
	p := synapse.PathosPrompt("Why is the sky blue?")
	a, b := chat(t, c, ModelSmall, p), chat(t, c, ModelSmall, p)
	if a.Text != b.Text || a.Usage != b.Usage {
		t.Fatalf("same request, different replies:\n%s\n%s", a.Text, b.Text)
	}
	if a.Usage.PromptTokens == 0 || a.Usage.CompletionTokens == 0 || a.Usage.TotalTokens != a.Usage.PromptTokens+a.Usage.CompletionTokens {
		t.Fatalf("usage %+v", a.Usage)
	}
	var m synapse.Manifest
	if err := synapse.Parse(a.Text, &m); err != nil {
		t.Fatalf("pathos reply is not a manifest: %v", err)
	}
	var v synapse.Verification
	if err := synapse.Parse(chat(t, c, ModelSmall, synapse.EthosPrompt("q", m, synapse.Solution{Answer: "a"}, 1)).Text, &v); err != nil {
		t.Fatal(err)
	}
	var v3 synapse.Verification
	_ = synapse.Parse(chat(t, c, ModelSmall, synapse.EthosPrompt("q", m, synapse.Solution{Answer: "a"}, 3)).Text, &v3)
	if v3.Scores.Mean() <= v.Scores.Mean() && v.Scores.Mean() < 0.97 {
		t.Fatalf("later rounds should score higher: round 1 %v, round 3 %v", v.Scores.Mean(), v3.Scores.Mean())
	}
}

func TestTags(t *testing.T) {
	_, c := serve(t, Options{})
	var v synapse.Verification
	_ = synapse.Parse(chat(t, c, ModelSmall, synapse.EthosPrompt("q [sim:disagree]", synapse.Manifest{}, synapse.Solution{}, 5)).Text, &v)
	if v.Scores.Accuracy != 0.3 {
		t.Fatalf("disagree: %+v", v)
	}
	if r := chat(t, c, ModelSmall, synapse.PathosPrompt("q [sim:malformed]")); strings.Contains(r.Text, "{") {
		t.Fatalf("malformed should not be JSON: %s", r.Text)
	}
}

func TestLatency(t *testing.T) {
	_, c := serve(t, Options{Latency: 50 * time.Millisecond, TokenLatency: time.Millisecond})
	start := time.Now()
	r := chat(t, c, ModelSmall, synapse.PathosPrompt("q"))
	if min := 50*time.Millisecond + time.Duration(r.Usage.CompletionTokens)*time.Millisecond; time.Since(start) < min {
		t.Fatalf("answered in %v, want at least %v", time.Since(start), min)
	}
}

func TestLoRAEndpoints(t *testing.T) {
	s, c := serve(t, Options{})
	ctx := context.Background()
	_, err := c.Chat(ctx, llm.Request{Model: "lora_x", Messages: []llm.Message{{Role: "user", Content: "hi"}}})
	var he *llm.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusNotFound || he.Temporary() {
		t.Fatalf("unknown model: %v", err)
	}
	if err := c.LoadLoRA(ctx, "lora_x", t.TempDir()); err == nil {
		t.Fatal("an empty directory loaded as an adapter")
	}
	dir := filepath.Join(t.TempDir(), "x")
	if err := lora.Scaffold(dir, lora.ScaffoldOptions{BaseModel: ModelSmall, Rank: 2, Hidden: 8}); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadLoRA(ctx, "lora_x", dir); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadLoRA(ctx, "lora_x", dir); err == nil {
		t.Fatal("loading twice should be refused, as vLLM does")
	}
	if base, err := c.BaseModels(ctx); err != nil || len(base) != 2 {
		t.Fatalf("BaseModels = %v, %v; want the two simulator models, not the adapter", base, err)
	}
	if got := s.LoadedLoRAs(); len(got) != 1 || got[0] != "lora_x" {
		t.Fatalf("loaded %v", got)
	}
	if _, err := c.Chat(ctx, llm.Request{Model: "lora_x", Messages: []llm.Message{{Role: "user", Content: "hi"}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.UnloadLoRA(ctx, "lora_x"); err != nil {
		t.Fatal(err)
	}
	if err := c.UnloadLoRA(ctx, "lora_x"); !errors.As(err, &he) || he.Status != http.StatusNotFound {
		t.Fatalf("unloading twice: %v", err)
	}
}

// FuzzChatRequest sends arbitrary bodies: the simulator answers 200 or 4xx, never panics.
func FuzzChatRequest(f *testing.F) {
	f.Add([]byte(`{"model":"si-simulator-small","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"si-simulator-small","messages":[{"role":"system","content":"You are Ethos"},{"role":"user","content":"<question>\nq\n</question>\nRound: 99999999999"}]}`))
	f.Add([]byte(`{"model":""}`))
	f.Add([]byte(`[]`))
	s := New(Options{})
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body)))
		if rec.Code != http.StatusOK && (rec.Code < 400 || rec.Code >= 500) {
			t.Fatalf("status %d for %q", rec.Code, body)
		}
	})
}

// TestMaxTokensIsHonoured: a reply longer than max_tokens is cut to it, as a
// real server does, so the mesh's per-call bound holds against the simulator.
func TestMaxTokensIsHonoured(t *testing.T) {
	_, c := serve(t, Options{})
	p := synapse.PathosPrompt("Why is the sky blue?")
	msgs := []llm.Message{{Role: "system", Content: p.System}, {Role: "user", Content: p.User}}
	full, err := c.Chat(context.Background(), llm.Request{Model: ModelSmall, Messages: msgs})
	if err != nil || full.Usage.CompletionTokens <= 5 {
		t.Fatalf("%+v %v", full, err)
	}
	cut, err := c.Chat(context.Background(), llm.Request{Model: ModelSmall, Messages: msgs, MaxTokens: 5})
	if err != nil || cut.Usage.CompletionTokens != 5 || !strings.HasPrefix(full.Text, cut.Text) || len(cut.Text) >= len(full.Text) {
		t.Fatalf("with max_tokens 5: %+v %v", cut, err)
	}
}
