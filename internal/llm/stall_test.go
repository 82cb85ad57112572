package llm

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// hangAfterTwo streams two chunks and then sends nothing until the test ends.
func hangAfterTwo(t *testing.T) *httptest.Server {
	t.Helper()
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
	return srv
}

// A stream that stops sending is cut after the stall bound with an error
// that says so, instead of running until the caller's deadline.
func TestStalledStreamIsCut(t *testing.T) {
	srv := hangAfterTwo(t)
	c := &Client{BaseURL: srv.URL + "/v1", StallTimeout: 300 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	chunks := 0
	start := time.Now()
	_, err := c.Chat(ctx, Request{Model: "m", Messages: []Message{{Role: "user", Content: "2+2?"}}, Stream: true, OnChunk: func() { chunks++ }})
	took := time.Since(start)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "the inference server sent nothing for 300ms") {
		t.Fatalf("err %v, want ErrStalled naming the bound", err)
	}
	if took < 300*time.Millisecond || took > 3*time.Second {
		t.Fatalf("cut after %v, want about the 300ms bound", took)
	}
	if chunks != 2 {
		t.Fatalf("%d chunks before the stall, want 2", chunks)
	}
}

// A stream that keeps sending, however slowly in all, is never cut.
func TestSteadyStreamIsNotCut(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 6; i++ {
			_, _ = w.Write([]byte(`data: {"choices":[{"delta":{"content":"x"}}]}` + "\n\n"))
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
		_, _ = w.Write([]byte(`data: {"choices":[{"delta":{},"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n"))
	}))
	t.Cleanup(srv.Close)
	c := &Client{BaseURL: srv.URL + "/v1", StallTimeout: 250 * time.Millisecond}
	resp, err := c.Chat(context.Background(), Request{Model: "m", Messages: []Message{{Role: "user", Content: "q"}}, Stream: true})
	if err != nil || resp.Text != "xxxxxx" {
		t.Fatalf("%q %v: a stream 600ms long whose chunks are 100ms apart was cut", resp.Text, err)
	}
}
