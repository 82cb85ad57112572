// Package llm is a client for OpenAI-compatible chat-completion servers
// (vLLM, Ollama, llama.cpp's server, hosted APIs and the mesh's simulator),
// plus vLLM's runtime LoRA endpoints.
package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxResponseBytes bounds what the client reads from a server.
const MaxResponseBytes = 8 << 20

// Client talks to one OpenAI-compatible base URL such as http://host:8000/v1.
// The zero value is not usable: BaseURL is required.
type Client struct {
	// BaseURL ends in /v1 (a trailing slash is fine).
	BaseURL string
	// APIKey is sent as a bearer token when set.
	APIKey string
	// HTTP defaults to a client with a 5-minute timeout.
	HTTP *http.Client
	// StallTimeout cuts a streamed response that sends nothing for longer
	// (from its headers on), with ErrStalled; 0 means DefaultStallTimeout,
	// a negative value no bound.
	StallTimeout time.Duration

	mu      sync.Mutex
	refused Refusals
}

// WithHTTP returns a client of the same backend that sends through hc, with
// nothing yet refused.
func (c *Client) WithHTTP(hc *http.Client) *Client {
	return &Client{BaseURL: c.BaseURL, APIKey: c.APIKey, HTTP: hc, StallTimeout: c.StallTimeout}
}

func (c *Client) stallTimeout() time.Duration {
	if c.StallTimeout == 0 {
		return DefaultStallTimeout
	}
	return c.StallTimeout
}

// HTTPClient is the http.Client c sends through: HTTP, or the default.
func (c *Client) HTTPClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Schema is the JSON schema of the object a request asks for, sent as
// response_format json_schema to a server that refuses json_object.
type Schema struct {
	Name   string
	Schema json.RawMessage
}

// Request is one chat completion.
type Request struct {
	Model       string
	Messages    []Message
	MaxTokens   int     // 0 leaves it to the server
	Temperature float64 // sent as given; 0 asks for the most likely output
	// Seed, when set, is sent as "seed" so that a server that supports it
	// (vLLM, llama.cpp's server, OpenAI) samples reproducibly.
	Seed *int64
	// JSON asks the server for a JSON object (response_format json_object).
	// A backend that refuses it (a 400 naming response_format) is asked with
	// Schema (json_schema) when set, then with neither; the client
	// remembers what the backend refused.
	JSON   bool
	Schema *Schema
	// Stream asks for the completion as server-sent events, with usage in
	// the last chunk (stream_options.include_usage). A backend that refuses
	// it (a 400 naming stream) is asked again without, and remembered.
	Stream bool
	// OnChunk, when set, is called as each streamed chunk arrives (from the
	// goroutine that called Chat).
	OnChunk func()
}

// Usage is the token accounting a server reports for one completion.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Response is a completion's text and usage.
type Response struct {
	Model string
	// Text is the answer; Reasoning is what the server returned apart as
	// reasoning_content (or reasoning), which is not part of the answer.
	Text         string
	Reasoning    string
	FinishReason string
	Usage        Usage
	// UsageEstimated is true when the server reported no usage and Usage
	// is EstimateUsage's estimate.
	UsageEstimated bool
	// Streamed is true when the completion arrived as a stream of Chunks.
	Streamed bool
	Chunks   int
}

// HTTPError is a non-2xx answer from the server.
type HTTPError struct {
	Status  int
	Message string
	// RetryAfter is the server's Retry-After (seconds or an HTTP date) on a
	// 429 or 503, at most MaxRetryAfterHeader; 0 when it named none.
	RetryAfter time.Duration
	// InStream is true for an error event inside a streamed response (the
	// HTTP status was 200; Status is the event's code, or 502).
	InStream bool
}

func (e *HTTPError) Error() string {
	if e.InStream {
		return fmt.Sprintf("inference server sent an error mid-response (%d): %s", e.Status, e.Message)
	}
	return fmt.Sprintf("inference server answered %d: %s", e.Status, e.Message)
}

// Temporary reports whether retrying the same request may succeed.
func (e *HTTPError) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout || e.Status >= 500
}

// MaxRetryAfterHeader bounds the Retry-After the client reports.
const MaxRetryAfterHeader = time.Hour

type chatRequest struct {
	Model          string          `json:"model"`
	Messages       []Message       `json:"messages"`
	MaxTokens      int             `json:"max_tokens,omitempty"`
	Temperature    float64         `json:"temperature"`
	Seed           *int64          `json:"seed,omitempty"`
	ResponseFormat *responseFormat `json:"response_format,omitempty"`
	Stream         bool            `json:"stream,omitempty"`
	StreamOptions  *streamOptions  `json:"stream_options,omitempty"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type responseFormat struct {
	Type       string      `json:"type"`
	JSONSchema *jsonSchema `json:"json_schema,omitempty"`
}

type jsonSchema struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema"`
}

type chatMessage struct {
	Content          string `json:"content"`
	ReasoningContent string `json:"reasoning_content"`
	Reasoning        string `json:"reasoning"`
}

type chatResponse struct {
	Model   string `json:"model"`
	Choices []struct {
		Message      chatMessage `json:"message"`
		FinishReason string      `json:"finish_reason"`
	} `json:"choices"`
	Usage *Usage `json:"usage"`
}

// JSON modes, in the order the client falls back through them.
const (
	formatObject = "json_object"
	formatSchema = "json_schema"
)

// Refusals is what a backend has refused so far; the client asks it no
// more and falls back as Request describes.
type Refusals struct {
	Stream, JSONObject, JSONSchema bool
}

// Refused reports what this backend has refused.
func (c *Client) Refused() Refusals {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused
}

// Chat runs one completion.
func (c *Client) Chat(ctx context.Context, req Request) (Response, error) {
	if req.Model == "" {
		return Response{}, errors.New("llm: model is required")
	}
	// Each refusal turns one of three features off (json_object,
	// json_schema, stream), so the fourth try is the plain request.
	for range 4 {
		body, stream := c.body(req)
		var resp Response
		var err error
		if stream {
			resp, err = c.stream(ctx, body, req.OnChunk)
		} else {
			var out chatResponse
			if err = c.post(ctx, "/chat/completions", body, &out); err == nil {
				resp, err = out.response()
			}
		}
		var he *HTTPError
		if errors.As(err, &he) && c.refuse(he, body) {
			continue
		}
		if err != nil {
			if resp.Streamed && resp.Chunks > 0 {
				// The stream was cut (or failed) after chunks arrived: the
				// call ran, and the caller bills what arrived.
				estimateMissing(req, &resp)
			}
			return resp, err
		}
		estimateMissing(req, &resp)
		return resp, nil
	}
	return Response{}, fmt.Errorf("inference server %s refused the request with streaming and JSON mode off", c.BaseURL)
}

// body is the request to send given what the backend has refused.
func (c *Client) body(req Request) (chatRequest, bool) {
	c.mu.Lock()
	r := c.refused
	c.mu.Unlock()
	body := chatRequest{Model: req.Model, Messages: req.Messages, MaxTokens: req.MaxTokens, Temperature: req.Temperature, Seed: req.Seed}
	if req.JSON {
		switch {
		case !r.JSONObject:
			body.ResponseFormat = &responseFormat{Type: formatObject}
		case !r.JSONSchema && req.Schema != nil:
			body.ResponseFormat = &responseFormat{Type: formatSchema, JSONSchema: &jsonSchema{Name: req.Schema.Name, Schema: req.Schema.Schema}}
		}
	}
	stream := req.Stream && !r.Stream
	if stream {
		body.Stream, body.StreamOptions = true, &streamOptions{IncludeUsage: true}
	}
	return body, stream
}

// refuse records that the backend refused a feature body used, when he is
// such a refusal (a 400 or 422 whose message names the feature), and
// reports whether it was.
func (c *Client) refuse(he *HTTPError, body chatRequest) bool {
	if he.InStream || (he.Status != http.StatusBadRequest && he.Status != http.StatusUnprocessableEntity) {
		return false
	}
	msg := strings.ToLower(he.Message)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := body.ResponseFormat; f != nil && namesJSONMode(msg) {
		if f.Type == formatObject {
			c.refused.JSONObject = true
		} else {
			c.refused.JSONSchema = true
		}
		return true
	}
	if body.Stream && strings.Contains(msg, "stream") {
		c.refused.Stream = true
		return true
	}
	return false
}

func namesJSONMode(msg string) bool {
	for _, w := range []string{"response_format", "response format", "json_object", "json_schema", "json mode", "responseformat"} {
		if strings.Contains(msg, w) {
			return true
		}
	}
	return false
}

func (r chatResponse) response() (Response, error) {
	if len(r.Choices) == 0 {
		return Response{}, errors.New("inference server returned no choices")
	}
	ch := r.Choices[0]
	out := Response{Model: r.Model, Text: ch.Message.Content, Reasoning: ch.Message.ReasoningContent + ch.Message.Reasoning, FinishReason: ch.FinishReason}
	if r.Usage != nil {
		out.Usage = *r.Usage
	}
	return out, nil
}

// estimateMissing fills each usage field resp's server left at zero (or
// below) with EstimateUsage's estimate, and marks resp estimated when it
// filled one: a missing prompt count is the prompt's estimate; a missing
// completion count, when the completion has text, reasoning or chunks, is
// the larger of its estimate and the chunks, at most req.MaxTokens (a
// server that honours max_tokens made no more, and a stream of one-byte
// chunks does not bill beyond it).
func estimateMissing(req Request, resp *Response) {
	est := EstimateUsage(req.Messages, resp.Reasoning+resp.Text, resp.Chunks)
	if req.MaxTokens > 0 {
		est.CompletionTokens = min(est.CompletionTokens, req.MaxTokens)
	}
	u := resp.Usage
	if u.PromptTokens <= 0 {
		u.PromptTokens, resp.UsageEstimated = est.PromptTokens, true
	}
	if u.CompletionTokens <= 0 {
		u.CompletionTokens = 0
		if est.CompletionTokens > 0 {
			u.CompletionTokens, resp.UsageEstimated = est.CompletionTokens, true
		}
	}
	if resp.UsageEstimated {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	resp.Usage = u
}

// EstimateUsage is the tokenizer-free estimate of a completion's usage when
// a server reports none: EstimateTokens of every message's role and content
// plus MessageOverhead a message, and of the completion (reasoning and
// text), or the number of streamed chunks when larger (servers stream about
// one token a chunk). It errs high, never low, for the English and code a
// BPE tokenizer makes about four bytes a token.
func EstimateUsage(msgs []Message, completion string, chunks int) Usage {
	p := MessageOverhead
	for _, m := range msgs {
		p += EstimateTokens(m.Role) + EstimateTokens(m.Content) + MessageOverhead
	}
	c := max(EstimateTokens(completion), chunks)
	return Usage{PromptTokens: p, CompletionTokens: c, TotalTokens: p + c}
}

// EstimateTokens is ceil(len(s)/4): four bytes a token, rounded up.
func EstimateTokens(s string) int { return (len(s) + 3) / 4 }

// MessageOverhead is what EstimateUsage adds a message for its chat template.
const MessageOverhead = 4

// LoadLoRA asks the server to load an adapter under name (vLLM's
// /v1/load_lora_adapter; the server needs VLLM_ALLOW_RUNTIME_LORA_UPDATING).
func (c *Client) LoadLoRA(ctx context.Context, name, path string) error {
	return c.post(ctx, "/load_lora_adapter", map[string]string{"lora_name": name, "lora_path": path}, nil)
}

// UnloadLoRA asks the server to drop an adapter.
func (c *Client) UnloadLoRA(ctx context.Context, name string) error {
	return c.post(ctx, "/unload_lora_adapter", map[string]string{"lora_name": name}, nil)
}

// Model is one entry of /v1/models. Parent names the base model of a LoRA
// adapter (vLLM's convention); it is empty for a base model.
type Model struct {
	ID     string `json:"id"`
	Parent string `json:"parent,omitempty"`
}

// Models lists what the server serves: base models and loaded adapters.
func (c *Client) Models(ctx context.Context) ([]Model, error) {
	var out struct {
		Data []Model `json:"data"`
	}
	err := c.do(ctx, http.MethodGet, "/models", nil, &out)
	return out.Data, err
}

// BaseModels lists the base models the server serves.
func (c *Client) BaseModels(ctx context.Context) ([]string, error) {
	all, err := c.Models(ctx)
	if err != nil {
		return nil, err
	}
	var base []string
	for _, m := range all {
		if m.Parent == "" {
			base = append(base, m.ID)
		}
	}
	return base, nil
}

func (c *Client) post(ctx context.Context, path string, body, out any) error {
	return c.do(ctx, http.MethodPost, path, body, out)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		buf, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(buf)
	}
	url := strings.TrimRight(c.BaseURL, "/") + path
	hreq, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	if c.APIKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return fmt.Errorf("inference server %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("inference server %s: %w", c.BaseURL, err)
	}
	if len(data) > MaxResponseBytes {
		return fmt.Errorf("inference server response exceeds %d bytes", MaxResponseBytes)
	}
	if resp.StatusCode/100 != 2 {
		return httpError(resp, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("inference server response is not valid JSON: %w", err)
	}
	return nil
}

func httpError(resp *http.Response, data []byte) *HTTPError {
	e := &HTTPError{Status: resp.StatusCode, Message: errorMessage(data)}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		e.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return e
}

// ParseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date, relative to now, at most MaxRetryAfterHeader; 0 when absent,
// malformed or past.
func ParseRetryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(h, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		d = time.Duration(min(n, int64(MaxRetryAfterHeader/time.Second))) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), MaxRetryAfterHeader)
}

var defaultHTTP = &http.Client{Timeout: 5 * time.Minute}

// errorMessage extracts {"error":{"message":...}} or {"message":...}, the
// shapes OpenAI-compatible servers use, falling back to the raw text.
func errorMessage(data []byte) string {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(data, &e) == nil {
		var inner struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(e.Error, &inner) == nil && inner.Message != "" {
			return inner.Message
		}
		var s string
		if json.Unmarshal(e.Error, &s) == nil && s != "" {
			return s
		}
		if e.Message != "" {
			return e.Message
		}
	}
	s := strings.TrimSpace(string(data))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
