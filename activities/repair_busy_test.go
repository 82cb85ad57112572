package activities

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/llm"
)

// A repair call answered 429 with Retry-After waits that long and is sent
// again within the step: the first reply (which ran and is billed) is kept,
// not thrown away by a retry of the whole step under a new id.
func TestRepairCallHonoursRetryAfter(t *testing.T) {
	var busyAt, againAt time.Time
	c, b := serveBackend(t, func(n int, req map[string]any, w http.ResponseWriter) {
		switch n {
		case 1:
			reply("four, I think", &llm.Usage{PromptTokens: 10, CompletionTokens: 3})(n, req, w)
		case 2:
			busyAt = time.Now()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"message":"slow down"}}`))
		default:
			againAt = time.Now()
			reply(solution, &llm.Usage{PromptTokens: 20, CompletionTokens: 5})(n, req, w)
		}
	})
	a := &Inference{LLM: c, Models: Models{Logos: "m"}}
	out, err := a.Logos(context.Background(), LogosInput{Question: "2+2?", Round: 1})
	if err != nil {
		t.Fatalf("a busy repair call failed the step: %v", err)
	}
	if len(b.requests) != 3 || !out.Usage.Repaired || out.Solution.Answer != "4" {
		t.Fatalf("%d requests, usage %+v, solution %+v", len(b.requests), out.Usage, out.Solution)
	}
	if out.Usage.PromptTokens != 30 || out.Usage.CompletionTokens != 8 {
		t.Fatalf("usage %+v: want both calls that answered", out.Usage)
	}
	if d := againAt.Sub(busyAt); d < 900*time.Millisecond {
		t.Fatalf("the repair call was sent again after %v, before its Retry-After of 1s", d)
	}
}

// A repair call that stays busy past the step's deadline gives up at once
// with the usage of the call that ran, rather than sleeping past the end.
func TestRepairCallBusyPastTheDeadlineGivesUp(t *testing.T) {
	c, b := serveBackend(t, func(n int, req map[string]any, w http.ResponseWriter) {
		if n == 1 {
			reply("four, I think", &llm.Usage{PromptTokens: 10, CompletionTokens: 3})(n, req, w)
			return
		}
		w.Header().Set("Retry-After", "20")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	a := &Inference{LLM: c, Models: Models{Logos: "m"}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := a.Logos(ctx, LogosInput{Question: "2+2?", Round: 1})
	if err == nil || time.Since(start) > time.Second || len(b.requests) != 2 {
		t.Fatalf("err %v after %v and %d requests: want a prompt failure", err, time.Since(start), len(b.requests))
	}
}

// A backend that stalls mid-stream fails the step quickly with an error
// that says what happened, not at the step's timeout; chunks had arrived,
// so it is ErrFailedAfterUse with their estimated usage: the workflow bills
// the attempt and retries the step under a new id.
func TestStalledBackendFailsTheStepRetryably(t *testing.T) {
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, c := range []string{`{"choices":[{"delta":{"content":"{\"answer\":"}}]}`, `{"choices":[{"delta":{"content":"\"4\""}}]}`} {
			_, _ = w.Write([]byte("data: " + c + "\n\n"))
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	a := &Inference{LLM: &llm.Client{BaseURL: srv.URL + "/v1", StallTimeout: 200 * time.Millisecond}, Models: Models{Logos: "m"}}
	start := time.Now()
	_, err := a.Logos(context.Background(), LogosInput{Question: "2+2?", Round: 1})
	if !errors.Is(err, llm.ErrStalled) || !strings.Contains(err.Error(), "sent nothing for 200ms") {
		t.Fatalf("err %v: want a stall", err)
	}
	if u := usageOf(t, err, ErrFailedAfterUse); u.PromptTokens <= 0 || u.CompletionTokens <= 0 || !u.UsageEstimated {
		t.Fatalf("usage %+v: want the stalled call's estimate", u)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("the stall was cut after %v", time.Since(start))
	}
}
