package simulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// stream answers a chat completion as server-sent events, the way vLLM and
// the OpenAI API do: a first chunk with the role, one chunk a token (four
// bytes, as tokens counts them) after TokenLatency each, a chunk with the
// finish reason, a chunk with usage and no choices when
// stream_options.include_usage is set, then data: [DONE].
func (s *Server) stream(w http.ResponseWriter, r *http.Request, req chatRequest, text string, prompt, completion int, finish string) {
	fl, _ := w.(http.Flusher)
	id := "simcmpl-" + hashHex(text)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	send := func(v any) bool {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		if fl != nil {
			fl.Flush()
		}
		return true
	}
	chunk := func(delta map[string]string, finish *string) map[string]any {
		return map[string]any{"id": id, "object": "chat.completion.chunk", "created": 0, "model": req.Model,
			"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish}}}
	}
	if err := sleep(r.Context(), s.opts.Latency); err != nil || !send(chunk(map[string]string{"role": "assistant", "content": ""}, nil)) {
		return
	}
	for i := 0; i < len(text); i += 4 {
		if err := sleep(r.Context(), s.opts.TokenLatency); err != nil {
			return
		}
		if !send(chunk(map[string]string{"content": text[i:min(i+4, len(text))]}, nil)) {
			return
		}
	}
	// tokens counts one more than the four-byte pieces; its last token
	// costs its latency too, so a stream takes as long as a whole reply.
	if err := sleep(r.Context(), time.Duration(max(completion-(len(text)+3)/4, 0))*s.opts.TokenLatency); err != nil {
		return
	}
	if !send(chunk(map[string]string{}, &finish)) {
		return
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		if !send(map[string]any{"id": id, "object": "chat.completion.chunk", "created": 0, "model": req.Model, "choices": []any{},
			"usage": map[string]int{"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}) {
			return
		}
	}
	_, _ = fmt.Fprint(w, "data: [DONE]\n\n")
	if fl != nil {
		fl.Flush()
	}
}
