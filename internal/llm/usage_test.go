package llm

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A server that reports one usage field and leaves the other at zero has
// the missing one estimated on its own, and the response is marked
// estimated; a field it did report is kept.
func TestPartialUsageIsEstimatedPerField(t *testing.T) {
	text := strings.Repeat("word ", 200) // 1000 bytes: 250 tokens
	for _, tc := range []struct {
		name  string
		usage string
		want  func(Usage, Usage) bool
	}{
		{"completion missing", `{"prompt_tokens":50,"completion_tokens":0}`, func(u, est Usage) bool {
			return u.PromptTokens == 50 && u.CompletionTokens == min(est.CompletionTokens, 256) && u.CompletionTokens > 0
		}},
		{"prompt missing", `{"prompt_tokens":0,"completion_tokens":7}`, func(u, est Usage) bool {
			return u.PromptTokens == est.PromptTokens && u.CompletionTokens == 7
		}},
		{"negative completion", `{"prompt_tokens":50,"completion_tokens":-3}`, func(u, est Usage) bool {
			return u.PromptTokens == 50 && u.CompletionTokens == min(est.CompletionTokens, 256)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"model":"m","choices":[{"message":{"content":"` + text + `"},"finish_reason":"stop"}],"usage":` + tc.usage + `}`))
			}))
			defer srv.Close()
			req := Request{Model: "m", Messages: askFor, MaxTokens: 256}
			got, err := (&Client{BaseURL: srv.URL}).Chat(context.Background(), req)
			est := EstimateUsage(req.Messages, text, 0)
			if err != nil || !got.UsageEstimated || !tc.want(got.Usage, est) ||
				got.Usage.TotalTokens != got.Usage.PromptTokens+got.Usage.CompletionTokens {
				t.Fatalf("usage %+v (estimated %v, estimate %+v), error %v", got.Usage, got.UsageEstimated, est, err)
			}
		})
	}
	t.Run("the completion estimate is capped at max_tokens", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"model":"m","choices":[{"message":{"content":"` + text + `"}}],"usage":{"prompt_tokens":50,"completion_tokens":0}}`))
		}))
		defer srv.Close()
		got, err := (&Client{BaseURL: srv.URL}).Chat(context.Background(), Request{Model: "m", Messages: askFor, MaxTokens: 16})
		if err != nil || !got.UsageEstimated || got.Usage.CompletionTokens != 16 || got.Usage.PromptTokens != 50 {
			t.Fatalf("usage %+v (estimated %v), error %v", got.Usage, got.UsageEstimated, err)
		}
	})
	t.Run("a reported usage is not marked estimated", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"model":"m","choices":[{"message":{"content":""}}],"usage":{"prompt_tokens":50,"completion_tokens":0}}`))
		}))
		defer srv.Close()
		got, err := (&Client{BaseURL: srv.URL}).Chat(context.Background(), Request{Model: "m", Messages: askFor})
		if err != nil || got.UsageEstimated || got.Usage.PromptTokens != 50 || got.Usage.CompletionTokens != 0 {
			t.Fatalf("usage %+v (estimated %v), error %v", got.Usage, got.UsageEstimated, err)
		}
	})
}

// A stream cut after chunks arrived returns the error with the estimated
// usage of what arrived, so the caller can bill the call.
func TestCutStreamCarriesEstimatedUsage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for range 3 {
			_, _ = w.Write([]byte(`data: {"model":"m","choices":[{"delta":{"content":"abcdefgh"},"finish_reason":null}]}` + "\n\n"))
		}
	}))
	defer srv.Close()
	req := Request{Model: "m", Messages: askFor, MaxTokens: 256, Stream: true}
	got, err := (&Client{BaseURL: srv.URL}).Chat(context.Background(), req)
	if !errors.Is(err, ErrStreamCut) {
		t.Fatalf("error %v, want ErrStreamCut", err)
	}
	est := EstimateUsage(req.Messages, strings.Repeat("abcdefgh", 3), 3)
	if got.Chunks != 3 || got.Text != strings.Repeat("abcdefgh", 3) || !got.UsageEstimated || got.Usage != est {
		t.Fatalf("response %+v, want 3 chunks' text and the estimate %+v", got, est)
	}
}
