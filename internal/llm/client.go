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
	"strings"
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
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
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
	JSON bool
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
	Text  string
	Usage Usage
}

// HTTPError is a non-2xx answer from the server.
type HTTPError struct {
	Status  int
	Message string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("inference server answered %d: %s", e.Status, e.Message)
}

// Temporary reports whether retrying the same request may succeed.
func (e *HTTPError) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout || e.Status >= 500
}

type chatRequest struct {
	Model          string          `json:"model"`
	Messages       []Message       `json:"messages"`
	MaxTokens      int             `json:"max_tokens,omitempty"`
	Temperature    float64         `json:"temperature"`
	Seed           *int64          `json:"seed,omitempty"`
	ResponseFormat *responseFormat `json:"response_format,omitempty"`
}

type responseFormat struct {
	Type string `json:"type"`
}

type chatResponse struct {
	Model   string `json:"model"`
	Choices []struct {
		Message Message `json:"message"`
	} `json:"choices"`
	Usage Usage `json:"usage"`
}

// Chat runs one completion.
func (c *Client) Chat(ctx context.Context, req Request) (Response, error) {
	if req.Model == "" {
		return Response{}, errors.New("llm: model is required")
	}
	body := chatRequest{Model: req.Model, Messages: req.Messages, MaxTokens: req.MaxTokens, Temperature: req.Temperature, Seed: req.Seed}
	if req.JSON {
		body.ResponseFormat = &responseFormat{Type: "json_object"}
	}
	var out chatResponse
	if err := c.post(ctx, "/chat/completions", body, &out); err != nil {
		return Response{}, err
	}
	if len(out.Choices) == 0 {
		return Response{}, errors.New("inference server returned no choices")
	}
	return Response{Model: out.Model, Text: out.Choices[0].Message.Content, Usage: out.Usage}, nil
}

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
		return &HTTPError{Status: resp.StatusCode, Message: errorMessage(data)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("inference server response is not valid JSON: %w", err)
	}
	return nil
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
