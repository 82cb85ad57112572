package activities

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/synapse"
)

// server answers chat completions from replies in order, recording what
// each request asked for; a reply of "" answers 503.
type server struct {
	mu       sync.Mutex
	replies  []string
	requests []map[string]any
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	_ = json.NewDecoder(r.Body).Decode(&req)
	s.mu.Lock()
	s.requests = append(s.requests, req)
	reply := s.replies[0]
	s.replies = s.replies[1:]
	s.mu.Unlock()
	if reply == "" {
		http.Error(w, `{"error":{"message":"overloaded"}}`, http.StatusServiceUnavailable)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"model": req["model"], "choices": []any{map[string]any{"message": map[string]string{"role": "assistant", "content": reply}}},
		"usage": map[string]int{"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})
}

func inference(t *testing.T, replies ...string) (*Inference, *server) {
	t.Helper()
	s := &server{replies: replies}
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return &Inference{LLM: &llm.Client{BaseURL: hs.URL + "/v1"}, Models: Models{Pathos: "m", Logos: "m", Ethos: "m", Arbiter: "m"}}, s
}

const manifest = `{"intent":"add","domain":"math","constraints":[],"success_criteria":[],"confidence":0.9}`

func TestEveryCallIsBoundedAndItsUsageSurvivesFailure(t *testing.T) {
	ctx := context.Background()
	b := StepBudget(synapse.PathosPrompt("2+2?"), 64)

	t.Run("max_tokens is sent on every call", func(t *testing.T) {
		a, s := inference(t, "prose", manifest)
		out, err := a.Pathos(ctx, PathosInput{Question: "2+2?", Budget: b})
		if err != nil || !out.Usage.Repaired || out.Usage.PromptTokens != 200 {
			t.Fatalf("%+v %v", out, err)
		}
		for i, r := range s.requests {
			if r["max_tokens"] != float64(64) {
				t.Fatalf("call %d asked for max_tokens %v", i, r["max_tokens"])
			}
		}
	})
	t.Run("a prompt over the bound is refused before any call", func(t *testing.T) {
		a, s := inference(t)
		_, err := a.Pathos(ctx, PathosInput{Question: strings.Repeat("long ", 10_000), Budget: b})
		var ae *temporal.ApplicationError
		if !errors.As(err, &ae) || ae.Type() != ErrPromptTooLarge || len(s.requests) != 0 {
			t.Fatalf("error %v after %d calls", err, len(s.requests))
		}
	})
	t.Run("unusable after repair carries both calls' usage", func(t *testing.T) {
		a, _ := inference(t, "prose", "more prose")
		_, err := a.Pathos(ctx, PathosInput{Question: "2+2?", Budget: b})
		u := usageOf(t, err, ErrMalformedOutput)
		if u.PromptTokens != 200 || u.CompletionTokens != 40 {
			t.Fatalf("usage %+v, want both calls", u)
		}
	})
	t.Run("a transient failure after a call ran is not retried by Temporal and carries the usage", func(t *testing.T) {
		a, _ := inference(t, "prose", "")
		_, err := a.Pathos(ctx, PathosInput{Question: "2+2?", Budget: b})
		u := usageOf(t, err, ErrFailedAfterUse)
		if u.PromptTokens != 100 || u.CompletionTokens != 20 {
			t.Fatalf("usage %+v, want the first call", u)
		}
	})
	t.Run("a transient failure before any call stays retryable", func(t *testing.T) {
		a, _ := inference(t, "")
		_, err := a.Pathos(ctx, PathosInput{Question: "2+2?", Budget: b})
		var ae *temporal.ApplicationError
		if err == nil || (errors.As(err, &ae) && ae.NonRetryable()) {
			t.Fatalf("error %v, want a retryable one", err)
		}
	})
}

func usageOf(t *testing.T, err error, typ string) AgentUsage {
	t.Helper()
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != typ || !ae.NonRetryable() {
		t.Fatalf("error %v, want non-retryable %s", err, typ)
	}
	var u AgentUsage
	if err := ae.Details(&u); err != nil {
		t.Fatalf("details: %v", err)
	}
	return u
}

func TestPromptTokensBoundCoversTheStepsPrompts(t *testing.T) {
	p := synapse.PathosPrompt("q")
	b := StepBudget(p, 100)
	first := PromptTokensBound(PromptMessages(p))
	if b.MaxPromptTokens != first+800+RepairAllowance || b.MaxTokens != 100 {
		t.Fatalf("budget %+v for a first prompt of %d", b, first)
	}
	pt, ct := b.EventBound()
	if pt != 2*int64(b.MaxPromptTokens) || ct != 200 {
		t.Fatalf("event bound %d/%d", pt, ct)
	}
	if d := StepBudget(p, 0); d.MaxTokens != DefaultMaxTokens {
		t.Fatalf("default max tokens %d", d.MaxTokens)
	}
}

// TestCutStreamIsBilledAndRetried: a backend that streams three chunks and
// then cuts the connection ran the call; the step fails with the estimated
// usage of what arrived, as ErrFailedAfterUse, so the workflow bills the
// attempt and retries the step under a new id.
func TestCutStreamIsBilledAndRetried(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for range 3 {
			_, _ = w.Write([]byte(`data: {"model":"m","choices":[{"delta":{"content":"{\"intent\""},"finish_reason":null}]}` + "\n\n"))
		}
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // cut the connection
	}))
	t.Cleanup(hs.Close)
	a := &Inference{LLM: &llm.Client{BaseURL: hs.URL + "/v1"}, Models: Models{Pathos: "m", Logos: "m", Ethos: "m", Arbiter: "m"}}
	b := StepBudget(synapse.PathosPrompt("2+2?"), 64)
	_, err := a.Pathos(context.Background(), PathosInput{Question: "2+2?", Budget: b})
	u := usageOf(t, err, ErrFailedAfterUse)
	if u.PromptTokens <= 0 || u.CompletionTokens < 3 || !u.UsageEstimated {
		t.Fatalf("usage %+v, want the cut call's estimate", u)
	}
}
