package llm

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/synapse"
)

// The contract tests replay response bodies in the shapes vLLM, Ollama,
// llama.cpp's llama-server and the OpenAI API document (testdata/, one file
// a body) against the client, and check what it asked for.

// answer is the JSON object every recorded completion carries.
const answer = `{"answer":"4","sources":[],"confidence":0.9}`

// replay is one recorded answer: a status, headers, and a body file.
type replay struct {
	status int
	header map[string]string
	file   string
}

// replayer serves replays in order and records each request's body.
type replayer struct {
	t        *testing.T
	mu       sync.Mutex
	replays  []replay
	requests []map[string]any
}

func (rp *replayer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		rp.t.Errorf("request body: %v", err)
	}
	rp.mu.Lock()
	rp.requests = append(rp.requests, req)
	if len(rp.replays) == 0 {
		rp.mu.Unlock()
		rp.t.Errorf("unexpected request %v", req)
		w.WriteHeader(http.StatusTeapot)
		return
	}
	next := rp.replays[0]
	rp.replays = rp.replays[1:]
	rp.mu.Unlock()
	body, err := os.ReadFile("testdata/" + next.file)
	if err != nil {
		rp.t.Fatal(err)
	}
	ct := "application/json"
	if strings.HasSuffix(next.file, ".sse") {
		ct = "text/event-stream"
	}
	w.Header().Set("Content-Type", ct)
	for k, v := range next.header {
		w.Header().Set(k, v)
	}
	if next.status == 0 {
		next.status = http.StatusOK
	}
	w.WriteHeader(next.status)
	_, _ = w.Write(body)
}

func replaying(t *testing.T, rs ...replay) (*Client, *replayer) {
	t.Helper()
	rp := &replayer{t: t, replays: rs}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		if len(rp.replays) > 0 {
			t.Errorf("%d replays left unasked", len(rp.replays))
		}
	})
	return &Client{BaseURL: srv.URL + "/v1"}, rp
}

var askFor = []Message{{Role: "system", Content: "Reply with only a JSON object"}, {Role: "user", Content: "2+2?"}}

var solutionSchema = &Schema{Name: "solution", Schema: json.RawMessage(`{"type":"object","required":["answer"]}`)}

func request(stream bool) Request {
	return Request{Model: "m", Messages: askFor, MaxTokens: 256, JSON: true, Schema: solutionSchema, Stream: stream}
}

func TestContractCompletions(t *testing.T) {
	cases := []struct {
		name, file   string
		stream       bool
		usage        Usage // zero: the server reports none
		reasoning    bool
		streamedInto int // chunks at least, when streamed
	}{
		{"vLLM streamed with usage", "vllm_stream_usage.sse", true, Usage{57, 13, 70}, false, 13},
		{"vLLM streamed with a reasoning parser", "vllm_stream_reasoning.sse", true, Usage{61, 18, 79}, true, 13},
		{"vLLM whole", "vllm_nonstream.json", false, Usage{57, 13, 70}, false, 0},
		{"Ollama streamed without usage", "ollama_stream_no_usage.sse", true, Usage{}, false, 13},
		{"Ollama whole with a <think> block in content", "ollama_nonstream_think.json", false, Usage{40, 52, 92}, false, 0},
		{"llama.cpp streamed, usage in the finish chunk", "llamacpp_stream_usage.sse", true, Usage{50, 13, 63}, false, 13},
		{"llama.cpp whole", "llamacpp_nonstream.json", false, Usage{50, 13, 63}, false, 0},
		{"OpenAI streamed, usage in an empty-choices chunk", "openai_stream_usage.sse", true, Usage{55, 13, 68}, false, 13},
		{"OpenAI whole", "openai_nonstream.json", false, Usage{55, 13, 68}, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, rp := replaying(t, replay{file: tc.file})
			chunks := 0
			req := request(tc.stream)
			req.OnChunk = func() { chunks++ }
			got, err := c.Chat(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			sent := rp.requests[0]
			if sent["max_tokens"] != float64(256) || sent["response_format"].(map[string]any)["type"] != "json_object" {
				t.Fatalf("sent %v", sent)
			}
			if tc.stream != (sent["stream"] == true) || (tc.stream && sent["stream_options"].(map[string]any)["include_usage"] != true) {
				t.Fatalf("stream %v: sent %v", tc.stream, sent)
			}
			if got.Streamed != tc.stream || (tc.stream && (got.Chunks < tc.streamedInto || chunks < got.Chunks)) {
				t.Fatalf("streamed %v in %d chunks (%d seen)", got.Streamed, got.Chunks, chunks)
			}
			if got.FinishReason != "stop" || (got.Reasoning != "") != tc.reasoning {
				t.Fatalf("finish %q reasoning %q", got.FinishReason, got.Reasoning)
			}
			if tc.usage == (Usage{}) {
				est := EstimateUsage(askFor, got.Reasoning+got.Text, got.Chunks)
				if !got.UsageEstimated || got.Usage != est || got.Usage.CompletionTokens < 13 {
					t.Fatalf("missing usage: %+v estimated %v, want the estimate %+v", got.Usage, got.UsageEstimated, est)
				}
			} else if got.UsageEstimated || got.Usage != tc.usage {
				t.Fatalf("usage %+v (estimated %v), want %+v", got.Usage, got.UsageEstimated, tc.usage)
			}
			var s synapse.Solution
			if err := synapse.Parse(got.Text, &s); err != nil || s.Answer != "4" {
				t.Fatalf("parse %q: %v %+v", got.Text, err, s)
			}
			if !strings.Contains(got.Text, "<think>") && got.Text != answer {
				t.Fatalf("text %q", got.Text)
			}
		})
	}
}

func TestContractRefusalsAreRememberedPerBackend(t *testing.T) {
	format := func(m map[string]any) string {
		f, _ := m["response_format"].(map[string]any)
		s, _ := f["type"].(string)
		return s
	}
	t.Run("a model that refuses stream", func(t *testing.T) {
		c, rp := replaying(t,
			replay{status: 400, file: "openai_400_stream.json"},
			replay{file: "openai_nonstream.json"},
			replay{file: "openai_nonstream.json"})
		for range 2 {
			if got, err := c.Chat(context.Background(), request(true)); err != nil || got.Text != answer || got.Streamed {
				t.Fatalf("%+v %v", got, err)
			}
		}
		if rp.requests[0]["stream"] != true || rp.requests[1]["stream"] != nil || rp.requests[2]["stream"] != nil {
			t.Fatalf("stream sent %v, %v, %v", rp.requests[0]["stream"], rp.requests[1]["stream"], rp.requests[2]["stream"])
		}
		if r := c.Refused(); !r.Stream || r.JSONObject {
			t.Fatalf("refused %+v", r)
		}
	})
	t.Run("a server that wants json_schema", func(t *testing.T) {
		c, rp := replaying(t,
			replay{status: 400, file: "lmstudio_400_json_object.json"},
			replay{file: "vllm_stream_usage.sse"},
			replay{file: "vllm_stream_usage.sse"})
		for range 2 {
			if got, err := c.Chat(context.Background(), request(true)); err != nil || got.Text != answer {
				t.Fatalf("%+v %v", got, err)
			}
		}
		if format(rp.requests[0]) != "json_object" || format(rp.requests[1]) != "json_schema" || format(rp.requests[2]) != "json_schema" {
			t.Fatalf("formats sent: %s, %s, %s", format(rp.requests[0]), format(rp.requests[1]), format(rp.requests[2]))
		}
		js := rp.requests[1]["response_format"].(map[string]any)["json_schema"].(map[string]any)
		if js["name"] != "solution" || js["schema"].(map[string]any)["type"] != "object" {
			t.Fatalf("json_schema sent %v", js)
		}
	})
	t.Run("a server with no JSON mode at all", func(t *testing.T) {
		c, rp := replaying(t,
			replay{status: 400, file: "hosted_400_response_format.json"},
			replay{status: 400, file: "hosted_400_response_format.json"},
			replay{file: "openai_stream_usage.sse"},
			replay{file: "openai_stream_usage.sse"})
		for range 2 {
			if got, err := c.Chat(context.Background(), request(true)); err != nil || got.Text != answer {
				t.Fatalf("%+v %v", got, err)
			}
		}
		if format(rp.requests[0]) != "json_object" || format(rp.requests[1]) != "json_schema" || format(rp.requests[2]) != "" || format(rp.requests[3]) != "" {
			t.Fatalf("formats sent: %q %q %q %q", format(rp.requests[0]), format(rp.requests[1]), format(rp.requests[2]), format(rp.requests[3]))
		}
		if r := c.Refused(); !r.JSONObject || !r.JSONSchema || r.Stream {
			t.Fatalf("refused %+v", r)
		}
	})
	t.Run("without a schema the prompt alone follows json_object", func(t *testing.T) {
		c, rp := replaying(t,
			replay{status: 400, file: "hosted_400_response_format.json"},
			replay{file: "openai_nonstream.json"})
		req := request(false)
		req.Schema = nil
		if _, err := c.Chat(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if format(rp.requests[1]) != "" {
			t.Fatalf("second request %v", rp.requests[1])
		}
	})
	t.Run("a 400 about something else is not a refusal", func(t *testing.T) {
		c, _ := replaying(t, replay{status: 400, file: "openai_429.json"})
		_, err := c.Chat(context.Background(), request(true))
		var he *HTTPError
		if !errors.As(err, &he) || he.Status != 400 || c.Refused() != (Refusals{}) {
			t.Fatalf("%v, refused %+v", err, c.Refused())
		}
	})
	t.Run("another backend is asked afresh", func(t *testing.T) {
		c, rp := replaying(t, replay{file: "vllm_stream_usage.sse"})
		if _, err := c.Chat(context.Background(), request(true)); err != nil {
			t.Fatal(err)
		}
		if rp.requests[0]["stream"] != true || format(rp.requests[0]) != "json_object" {
			t.Fatalf("sent %v", rp.requests[0])
		}
	})
}

func TestContractErrors(t *testing.T) {
	t.Run("429 with Retry-After seconds", func(t *testing.T) {
		c, _ := replaying(t, replay{status: 429, header: map[string]string{"Retry-After": "20"}, file: "openai_429.json"})
		_, err := c.Chat(context.Background(), request(true))
		var he *HTTPError
		if !errors.As(err, &he) || !he.Temporary() || he.RetryAfter != 20*time.Second || !strings.Contains(he.Message, "Rate limit") {
			t.Fatalf("%#v", err)
		}
	})
	t.Run("503 with Retry-After as an HTTP date", func(t *testing.T) {
		at := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
		c, _ := replaying(t, replay{status: 503, header: map[string]string{"Retry-After": at}, file: "openai_429.json"})
		_, err := c.Chat(context.Background(), request(false))
		var he *HTTPError
		if !errors.As(err, &he) || he.RetryAfter < 85*time.Second || he.RetryAfter > 90*time.Second {
			t.Fatalf("%#v", err)
		}
	})
	t.Run("vLLM error mid-stream", func(t *testing.T) {
		c, _ := replaying(t, replay{file: "vllm_stream_error.sse"})
		_, err := c.Chat(context.Background(), request(true))
		var he *HTTPError
		if !errors.As(err, &he) || !he.InStream || he.Status != 500 || !he.Temporary() || !strings.Contains(he.Message, "engine is dead") {
			t.Fatalf("%#v", err)
		}
		if c.Refused().Stream {
			t.Fatal("an error event is not a refusal of stream")
		}
	})
	t.Run("vLLM's bare error object mid-stream", func(t *testing.T) {
		c, _ := replaying(t, replay{file: "vllm_stream_error_object.sse"})
		_, err := c.Chat(context.Background(), request(true))
		var he *HTTPError
		if !errors.As(err, &he) || !he.InStream || he.Status != 400 || he.Temporary() || !strings.Contains(he.Message, "maximum context length") {
			t.Fatalf("%#v", err)
		}
		if c.Refused() != (Refusals{}) {
			t.Fatalf("refused %+v", c.Refused())
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 15, 0, 0, 0, time.UTC)
	cases := map[string]time.Duration{
		"": 0, "0": 0, "-5": 0, "7": 7 * time.Second, " 7 ": 7 * time.Second, "soon": 0, "1e3": 0,
		"99999999999999999999": 0, "86400": MaxRetryAfterHeader,
		now.Add(30 * time.Second).Format(http.TimeFormat): 30 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0,
		now.Add(48 * time.Hour).Format(http.TimeFormat):   MaxRetryAfterHeader,
	}
	for h, want := range cases {
		if got := ParseRetryAfter(h, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", h, got, want)
		}
	}
}

// An estimate never bills a completion beyond the max_tokens asked for,
// however many chunks a server splits it into.
func TestEstimateIsBoundedByMaxTokens(t *testing.T) {
	var b strings.Builder
	for range 500 {
		b.WriteString(`data: {"choices":[{"delta":{"content":"x"},"finish_reason":null}]}` + "\n\n")
	}
	b.WriteString(`data: {"choices":[{"delta":{},"finish_reason":"length"}]}` + "\n\ndata: [DONE]\n\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte(b.String()))
	}))
	defer srv.Close()
	got, err := (&Client{BaseURL: srv.URL}).Chat(context.Background(), Request{Model: "m", Messages: askFor, MaxTokens: 64, Stream: true})
	if err != nil || !got.UsageEstimated || got.Chunks != 500 || got.Usage.CompletionTokens != 64 {
		t.Fatalf("%+v %v", got, err)
	}
}

// A server that refuses everything in turn still gets the plain request.
func TestEveryRefusalInTurnEndsAtThePlainRequest(t *testing.T) {
	c, rp := replaying(t,
		replay{status: 400, file: "hosted_400_response_format.json"},
		replay{status: 400, file: "hosted_400_response_format.json"},
		replay{status: 400, file: "openai_400_stream.json"},
		replay{file: "openai_nonstream.json"})
	got, err := c.Chat(context.Background(), request(true))
	if err != nil || got.Text != answer || len(rp.requests) != 4 {
		t.Fatalf("%+v %v after %d requests", got, err, len(rp.requests))
	}
	if last := rp.requests[3]; last["stream"] != nil || last["response_format"] != nil {
		t.Fatalf("last request %v", last)
	}
}
