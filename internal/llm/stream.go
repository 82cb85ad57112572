package llm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// ErrStreamCut is returned when a stream ends before its completion did:
// no [DONE] and no finish_reason. A retry may succeed.
var ErrStreamCut = errors.New("inference stream ended before the completion finished")

// ErrStalled is returned when a response sends nothing for longer than the
// client's StallTimeout; the call was cut. A retry may succeed.
var ErrStalled = errors.New("the inference stream stalled; the call was cut and a retry may succeed")

// DefaultStallTimeout is the Client's StallTimeout when it is zero.
const DefaultStallTimeout = 30 * time.Second

// stallReader cuts a response body (through cancel, which ends the
// request) when no byte of it arrives for d, and then reads as ErrStalled.
type stallReader struct {
	r       io.Reader
	d       time.Duration
	t       *time.Timer
	stalled atomic.Bool
}

func newStallReader(r io.Reader, d time.Duration, cancel func()) *stallReader {
	s := &stallReader{r: r, d: d}
	s.t = time.AfterFunc(d, func() { s.stalled.Store(true); cancel() })
	return s
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if s.stalled.Load() {
		return 0, fmt.Errorf("the inference server sent nothing for %s: %w", s.d, ErrStalled)
	}
	if n > 0 {
		s.t.Reset(s.d)
	}
	return n, err
}

func (s *stallReader) stop() { s.t.Stop() }

type streamChunk struct {
	// Object is "error" for the bare error object vLLM streams.
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Delta        chatMessage `json:"delta"`
		FinishReason *string     `json:"finish_reason"`
	} `json:"choices"`
	Usage *Usage          `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// stream posts body and reads the completion as server-sent events,
// calling onChunk as each chunk arrives.
func (c *Client) stream(ctx context.Context, body chatRequest, onChunk func()) (Response, error) {
	buf, err := json.Marshal(body)
	if err != nil {
		return Response{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.BaseURL, "/")+"/chat/completions", bytes.NewReader(buf))
	if err != nil {
		return Response{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "text/event-stream")
	if c.APIKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return Response{}, fmt.Errorf("inference server %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return Response{}, httpError(resp, data)
	}
	rb := io.Reader(resp.Body)
	if d := c.stallTimeout(); d > 0 {
		sr := newStallReader(resp.Body, d, cancel)
		defer sr.stop()
		rb = sr
	}
	br := bufio.NewReader(rb)
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" && startsObject(br) {
		// A server that ignores stream answers in one piece.
		data, err := io.ReadAll(io.LimitReader(br, MaxResponseBytes+1))
		if err != nil {
			return Response{}, fmt.Errorf("inference server %s: %w", c.BaseURL, err)
		}
		if len(data) > MaxResponseBytes {
			return Response{}, fmt.Errorf("inference server response exceeds %d bytes", MaxResponseBytes)
		}
		var out chatResponse
		if err := json.Unmarshal(data, &out); err != nil {
			return Response{}, fmt.Errorf("inference server response is not valid JSON: %w", err)
		}
		return out.response()
	}
	out, err := ReadStream(br, onChunk)
	if err != nil {
		return out, fmt.Errorf("inference server %s: %w", c.BaseURL, err)
	}
	return out, nil
}

// startsObject reports whether r's first non-space byte is '{'.
func startsObject(r *bufio.Reader) bool {
	for n := 1; n <= 512; n++ {
		b, _ := r.Peek(n)
		if len(b) < n {
			return false
		}
		switch c := b[n-1]; c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		default:
			return false
		}
	}
	return false
}

// ReadStream assembles a chat completion from its event stream: the
// content and reasoning deltas of the first choice, the finish reason, and
// the last usage reported. It stops at "data: [DONE]"; an error event (an
// "error" event type, a chunk holding "error", or vLLM's bare
// {"object":"error",...}) becomes an *HTTPError; a
// stream that ends before a finish reason or [DONE] is ErrStreamCut. The
// stream is bounded by MaxResponseBytes and each line by MaxEventLine.
func ReadStream(r io.Reader, onChunk func()) (out Response, _ error) {
	sse := NewSSEReader(r)
	var text, reasoning strings.Builder
	// On an error too, out holds what arrived: the caller bills it.
	defer func() { out.Text, out.Reasoning = text.String(), reasoning.String() }()
	out.Streamed = true
	finished := false
	for {
		ev, err := sse.Next()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if !finished {
				return out, ErrStreamCut
			}
			break
		}
		if err != nil {
			return out, err
		}
		data := bytes.TrimSpace(ev.Data)
		if string(data) == "[DONE]" {
			break
		}
		if ev.Type == "error" {
			return out, streamError(data)
		}
		var ch streamChunk
		if err := json.Unmarshal(data, &ch); err != nil {
			return out, fmt.Errorf("inference stream chunk is not valid JSON: %w", err)
		}
		if ch.Object == "error" || (len(ch.Error) > 0 && string(ch.Error) != "null") {
			return out, streamError(data)
		}
		if ch.Model != "" {
			out.Model = ch.Model
		}
		if ch.Usage != nil {
			out.Usage = *ch.Usage
		}
		if len(ch.Choices) > 0 {
			d := ch.Choices[0]
			text.WriteString(d.Delta.Content)
			reasoning.WriteString(d.Delta.ReasoningContent)
			reasoning.WriteString(d.Delta.Reasoning)
			if d.Delta.Content != "" || d.Delta.ReasoningContent != "" || d.Delta.Reasoning != "" {
				out.Chunks++
			}
			if d.FinishReason != nil && *d.FinishReason != "" {
				out.FinishReason, finished = *d.FinishReason, true
			}
		}
		if onChunk != nil {
			onChunk()
		}
	}
	return out, nil
}

// streamError is the error an error event carries, in the shapes servers
// use: {"error":{"message":..,"code":..}}, {"message":..} or text.
func streamError(data []byte) error {
	e := &HTTPError{Status: http.StatusBadGateway, Message: errorMessage(data), InStream: true}
	var withCode struct {
		Error struct {
			Code json.RawMessage `json:"code"`
		} `json:"error"`
		Code json.RawMessage `json:"code"`
	}
	if json.Unmarshal(data, &withCode) == nil {
		for _, raw := range []json.RawMessage{withCode.Error.Code, withCode.Code} {
			var n int
			if json.Unmarshal(raw, &n) == nil && n >= 400 && n < 600 {
				e.Status = n
				break
			}
		}
	}
	if e.Message == "" {
		e.Message = "error event with no message"
	}
	return e
}
