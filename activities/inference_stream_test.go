package activities

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/synapse"
)

// backend answers chat completions with answer(request) and records requests.
type backend struct {
	mu       sync.Mutex
	requests []map[string]any
	answer   func(n int, req map[string]any, w http.ResponseWriter)
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	_ = json.NewDecoder(r.Body).Decode(&req)
	b.mu.Lock()
	b.requests = append(b.requests, req)
	n := len(b.requests)
	b.mu.Unlock()
	b.answer(n, req, w)
}

func serveBackend(t *testing.T, answer func(n int, req map[string]any, w http.ResponseWriter)) (*llm.Client, *backend) {
	t.Helper()
	b := &backend{answer: answer}
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	return &llm.Client{BaseURL: srv.URL + "/v1"}, b
}

// reply answers with content and, when usage is set, that usage.
func reply(content string, usage *llm.Usage) func(int, map[string]any, http.ResponseWriter) {
	return func(_ int, req map[string]any, w http.ResponseWriter) {
		body := map[string]any{"model": req["model"], "choices": []any{map[string]any{"message": map[string]string{"role": "assistant", "content": content}, "finish_reason": "stop"}}}
		if usage != nil {
			body["usage"] = usage
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	}
}

const (
	solution     = `{"answer":"4","sources":[],"confidence":0.9}`
	verification = `{"scores":{"accuracy":0.9,"relevance":0.9,"safety":1},"violations":[],"feedback":"ok"}`
	verdict      = `{"answer":"4","confidence":0.8,"note":"n"}`
)

// A 7B model for the agents and a 72B one for the Arbiter, each on its own
// server, and a completion bound for Ethos below the run's.
func TestEachAgentHasItsOwnBackend(t *testing.T) {
	ctx := context.Background()
	u := &llm.Usage{PromptTokens: 10, CompletionTokens: 5}
	small, sb := serveBackend(t, func(n int, req map[string]any, w http.ResponseWriter) {
		if req["model"] == "qwen-7b-logos" {
			reply(solution, u)(n, req, w)
			return
		}
		reply(verification, u)(n, req, w)
	})
	large, lb := serveBackend(t, reply(verdict, u))
	a := &Inference{LLM: small, Models: Models{Pathos: "qwen-7b", Logos: "qwen-7b-logos", Ethos: "qwen-7b", Arbiter: "qwen-72b"},
		Backends: map[synapse.Role]Backend{synapse.Arbiter: {LLM: large}, synapse.Ethos: {MaxTokens: 32}}}
	b := Budget{MaxTokens: 64}
	if _, err := a.Logos(ctx, LogosInput{Question: "2+2?", Round: 1, Budget: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Ethos(ctx, EthosInput{Question: "2+2?", Round: 1, Budget: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Ethos(ctx, EthosInput{Question: "2+2?", Round: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Arbiter(ctx, ArbiterInput{Question: "2+2?", Budget: b}); err != nil {
		t.Fatal(err)
	}
	if len(sb.requests) != 3 || len(lb.requests) != 1 || lb.requests[0]["model"] != "qwen-72b" {
		t.Fatalf("small served %d, large %d (%v)", len(sb.requests), len(lb.requests), lb.requests)
	}
	for i, want := range []float64{64, 32, 32} {
		if got := sb.requests[i]["max_tokens"]; got != want {
			t.Fatalf("call %d: max_tokens %v, want %v", i, got, want)
		}
	}
	if lb.requests[0]["max_tokens"] != float64(64) {
		t.Fatalf("arbiter max_tokens %v", lb.requests[0]["max_tokens"])
	}
}

// A server that reports no usage is billed an estimate, never zero, and
// the step says so.
func TestMissingUsageIsEstimatedAndMarked(t *testing.T) {
	c, _ := serveBackend(t, reply(solution, nil))
	a := &Inference{LLM: c, Models: Models{Logos: "m"}}
	out, err := a.Logos(context.Background(), LogosInput{Question: "2+2?", Round: 1})
	if err != nil {
		t.Fatal(err)
	}
	msgs := PromptMessages(synapse.LogosPrompt("2+2?", synapse.Manifest{}, 1, "", ""))
	want := llm.EstimateUsage(msgs, solution, 0)
	if !out.Usage.UsageEstimated || out.Usage.PromptTokens != want.PromptTokens || out.Usage.CompletionTokens != want.CompletionTokens || want.CompletionTokens == 0 {
		t.Fatalf("usage %+v, want the estimate %+v marked", out.Usage, want)
	}
}

// A 429 with Retry-After delays the next attempt by it, capped.
func TestRetryAfterDelaysTheNextAttempt(t *testing.T) {
	for header, want := range map[string]time.Duration{"3": 3 * time.Second, "3600": MaxRetryAfter} {
		c, _ := serveBackend(t, func(_ int, _ map[string]any, w http.ResponseWriter) {
			w.Header().Set("Retry-After", header)
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"message":"slow down"}}`))
		})
		a := &Inference{LLM: c, Models: Models{Logos: "m"}}
		_, err := a.Logos(context.Background(), LogosInput{Question: "2+2?", Round: 1})
		var ae *temporal.ApplicationError
		if !errors.As(err, &ae) || ae.Type() != ErrInferenceBusy || ae.NonRetryable() || ae.NextRetryDelay() != want {
			t.Fatalf("Retry-After %s: %v, want a retryable %s with a %v delay", header, err, ErrInferenceBusy, want)
		}
	}
}

// A backend that refuses json_object is asked with the agent's schema.
func TestJSONModeFallsBackToTheAgentsSchema(t *testing.T) {
	c, b := serveBackend(t, func(n int, req map[string]any, w http.ResponseWriter) {
		if n == 1 {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"'response_format.type' must be 'json_schema'"}`))
			return
		}
		reply(verdict, &llm.Usage{PromptTokens: 1, CompletionTokens: 1})(n, req, w)
	})
	a := &Inference{LLM: c, Models: Models{Arbiter: "m"}}
	if _, err := a.Arbiter(context.Background(), ArbiterInput{Question: "q"}); err != nil {
		t.Fatal(err)
	}
	f := b.requests[1]["response_format"].(map[string]any)
	if f["type"] != "json_schema" || f["json_schema"].(map[string]any)["name"] != "verdict" {
		t.Fatalf("fallback sent %v", f)
	}
}

// A streamed step heartbeats with its progress as chunks arrive, at most
// once every HeartbeatEvery.
func TestChunkHeartbeatsAreThrottled(t *testing.T) {
	clock := time.Unix(0, 0)
	var got []StreamProgress
	chunk := throttled(time.Second, func() time.Time { return clock }, func(p StreamProgress) { got = append(got, p) })
	for range 250 { // 2.5 s of chunks 10 ms apart
		chunk()
		clock = clock.Add(10 * time.Millisecond)
	}
	want := []StreamProgress{{1}, {101}, {201}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("heartbeats %v, want %v", got, want)
	}
}

// The step's calls stream (so the heartbeats above have chunks to count),
// and a streamed reply bills the server's usage, not an estimate.
func TestStepsStream(t *testing.T) {
	sim := simulator.New(simulator.Options{})
	var streamed bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		streamed = r.Header.Get("Accept") == "text/event-stream"
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	a := &Inference{LLM: &llm.Client{BaseURL: srv.URL + "/v1"}, Models: Models{Pathos: simulator.ModelSmall}}
	out, err := a.Pathos(context.Background(), PathosInput{Question: "Why is the sky blue?"})
	if err != nil || out.Usage.UsageEstimated || out.Usage.CompletionTokens == 0 || !streamed {
		t.Fatalf("%+v %v, streamed %v", out, err, streamed)
	}
	a.NoStream = true
	if _, err := a.Pathos(context.Background(), PathosInput{Question: "Why is the sky blue?"}); err != nil || streamed {
		t.Fatalf("NoStream: %v, streamed %v", err, streamed)
	}
}

// Tracing wraps every backend's client, the agents' own too, and keeps
// a client shared by several roles one client (its refusals stay shared).
func TestWrapHTTPWrapsEveryBackend(t *testing.T) {
	shared, own := &llm.Client{BaseURL: "http://a/v1"}, &llm.Client{BaseURL: "http://b/v1", APIKey: "k"}
	a := &Inference{LLM: shared, Backends: map[synapse.Role]Backend{synapse.Ethos: {LLM: shared, MaxTokens: 9}, synapse.Arbiter: {LLM: own}}}
	marked := &http.Client{}
	w := WrapHTTP(a, func(*http.Client) *http.Client { return marked })
	if w.LLM.HTTP != marked || w.Backends[synapse.Arbiter].LLM.HTTP != marked || w.Backends[synapse.Arbiter].LLM.APIKey != "k" {
		t.Fatalf("not every client wrapped: %+v", w)
	}
	if w.Backends[synapse.Ethos].LLM != w.LLM || w.Backends[synapse.Ethos].MaxTokens != 9 {
		t.Fatal("a shared client became two")
	}
	if a.LLM.HTTP != nil || a.Backends[synapse.Arbiter].LLM.HTTP != nil {
		t.Fatal("the original was changed")
	}
	if len(Clients(w)) != 2 {
		t.Fatalf("%d clients", len(Clients(w)))
	}
}
