// Package simulator is an inference SIMULATOR: an HTTP server that speaks the
// OpenAI chat-completions API (and vLLM's runtime LoRA endpoints) so the mesh
// runs end to end without a GPU or a model. It is not a language model.
//
// Its replies are deterministic: the same request always gets the same reply.
// It recognises the Cloud Synapse agents by their system prompts and answers
// each in the JSON shape the agent asks for. Scores come from a hash of the
// question: Ethos's mean score is 0.62 to 0.98 in round 1 and rises by 0.12 a
// round as feedback is addressed. A question may steer it with tags:
//
//	[sim:agree]          Ethos scores 0.95 on every criterion
//	[sim:disagree]       Ethos scores 0.30 and asks for more every round
//	[sim:violate]        Ethos reports a violated constraint
//	[sim:malformed]      every agent replies with prose instead of JSON
//	[sim:malformed-once] the first reply is prose; the repair prompt gets JSON
//
// The simulator is not accurate on si eval's data sets, and says so by a
// rule: Logos answers the arithmetic task (a+b*c+d-e*f) right iff
// H(question, seed, round) mod 100 < p, with p = 60 + 10 a round after the
// first, + 5 with Ethos's feedback, − 10·temperature, at most 95; a wrong
// answer is off by 1 to 5. It cannot read word problems and answers them
// with a negative number. The Arbiter keeps the last round's answer. The
// rule in full is in eval.go.
//
// Latency is configurable per request and per completion token. A request's
// max_tokens is honoured as a server would: a longer reply is cut to that
// many tokens (finish_reason "length").
package simulator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/synapse"
)

// Base models the simulator serves. The "large" one is meant for the Arbiter.
const (
	ModelSmall = "si-simulator-small"
	ModelLarge = "si-simulator-large"
)

// MaxRequestBytes bounds a request body.
const MaxRequestBytes = 4 << 20

// Options configures the simulator. The zero value answers at once.
type Options struct {
	// Latency is added to every completion.
	Latency time.Duration
	// TokenLatency is added per completion token.
	TokenLatency time.Duration
	// LoadDelay is how long loading a LoRA adapter takes, through the load
	// endpoint or on a request's cold start (LoRADir). Zero loads at once;
	// the commands default to DefaultLoRALoadLatency.
	LoadDelay time.Duration
	// LoRADir, when set, is where a request naming an adapter that is not
	// loaded finds it (LoRADir/<name>, as vLLM's filesystem resolver
	// does): it is loaded first, taking LoadDelay. Empty answers such a
	// request 404, as vLLM without a resolver does.
	LoRADir string
	// FailLoad makes every adapter load fail (for compensation tests).
	FailLoad bool
}

// Server is the simulator's http.Handler.
type Server struct {
	opts     Options
	mux      *http.ServeMux
	requests atomic.Int64

	mu    sync.Mutex
	loras map[string]adapter
	// resolving and coldStarts belong to the resolver (coldstart.go).
	resolving  map[string]chan struct{}
	coldStarts int
}

type adapter struct{ path, base string }

// New returns a simulator.
func New(opts Options) *Server {
	s := &Server{opts: opts, mux: http.NewServeMux(), loras: map[string]adapter{}}
	s.mux.HandleFunc("GET /v1/models", s.models)
	s.mux.HandleFunc("POST /v1/chat/completions", s.chat)
	s.mux.HandleFunc("POST /v1/load_lora_adapter", s.loadLoRA)
	s.mux.HandleFunc("POST /v1/unload_lora_adapter", s.unloadLoRA)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Requests is the number of chat completions served.
func (s *Server) Requests() int64 { return s.requests.Load() }

// LoadedLoRAs lists the adapters currently loaded, sorted.
func (s *Server) LoadedLoRAs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.loras))
	for n := range s.loras {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	type model struct {
		ID      string  `json:"id"`
		Object  string  `json:"object"`
		OwnedBy string  `json:"owned_by"`
		Parent  *string `json:"parent"`
	}
	data := []model{{ModelSmall, "model", "si-simulator", nil}, {ModelLarge, "model", "si-simulator", nil}}
	s.mu.Lock()
	for n, a := range s.loras {
		data = append(data, model{n, "model", "si-simulator", &a.base})
	}
	s.mu.Unlock()
	sort.Slice(data[2:], func(i, j int) bool { return data[2+i].ID < data[2+j].ID })
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

type chatRequest struct {
	Model     string        `json:"model"`
	Messages  []llm.Message `json:"messages"`
	MaxTokens int           `json:"max_tokens"`
	// Stream and StreamOptions ask for server-sent events (stream.go).
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options"`
	// Seed and Temperature feed the arithmetic rule (eval.go); absent is 0.
	Seed        *int64   `json:"seed"`
	Temperature *float64 `json:"temperature"`
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Model == "" || len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "model and messages are required")
		return
	}
	if req.Model != ModelSmall && req.Model != ModelLarge {
		s.mu.Lock()
		_, ok := s.loras[req.Model]
		s.mu.Unlock()
		if !ok && !s.resolve(r.Context(), req.Model) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("The model `%s` does not exist.", req.Model))
			return
		}
	}
	s.requests.Add(1)
	var sp sampling
	if req.Seed != nil {
		sp.seed = *req.Seed
	}
	if req.Temperature != nil {
		sp.temperature = *req.Temperature
	}
	text := reply(req.Messages, sp)
	prompt := 0
	for _, m := range req.Messages {
		prompt += tokens(m.Content)
	}
	completion := tokens(text)
	finish := "stop"
	if req.MaxTokens > 0 && completion > req.MaxTokens {
		text, completion, finish = text[:4*(req.MaxTokens-1)], req.MaxTokens, "length"
	}
	if req.Stream {
		s.stream(w, r, req, text, prompt, completion, finish)
		return
	}
	if err := sleep(r.Context(), s.opts.Latency+time.Duration(completion)*s.opts.TokenLatency); err != nil {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":      "simcmpl-" + hashHex(text),
		"object":  "chat.completion",
		"created": 0,
		"model":   req.Model,
		"choices": []map[string]any{{
			"index": 0, "finish_reason": finish,
			"message": map[string]string{"role": "assistant", "content": text},
		}},
		"usage": map[string]int{"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
	})
}

func (s *Server) loadLoRA(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"lora_name"`
		Path string `json:"lora_path"`
	}
	if !decode(w, r, &req) {
		return
	}
	if req.Name == "" || req.Path == "" {
		writeError(w, http.StatusBadRequest, "lora_name and lora_path are required")
		return
	}
	if err := sleep(r.Context(), s.opts.LoadDelay); err != nil {
		return
	}
	if s.opts.FailLoad {
		writeError(w, http.StatusInternalServerError, "simulated load failure for "+req.Name)
		return
	}
	// Like vLLM, the adapter is read from lora_path, a directory on this host.
	a, err := lora.Open(req.Path)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Loading lora %s failed: %v", req.Name, err))
		return
	}
	s.mu.Lock()
	_, exists := s.loras[req.Name]
	if !exists {
		s.loras[req.Name] = adapter{path: req.Path, base: a.Config.BaseModel}
	}
	s.mu.Unlock()
	if exists {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("The lora adapter '%s' has already been loaded.", req.Name))
		return
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, fmt.Sprintf("Success: LoRA adapter '%s' added successfully.", req.Name))
}

func (s *Server) unloadLoRA(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"lora_name"`
	}
	if !decode(w, r, &req) {
		return
	}
	s.mu.Lock()
	_, ok := s.loras[req.Name]
	delete(s.loras, req.Name)
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("The lora adapter '%s' cannot be found.", req.Name))
		return
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, fmt.Sprintf("Success: LoRA adapter '%s' removed successfully.", req.Name))
}

// reply is the deterministic answer to a conversation.
func reply(msgs []llm.Message, sp sampling) string {
	system, user := "", ""
	repair := false
	for _, m := range msgs {
		switch m.Role {
		case "system":
			system = m.Content
		case "user":
			if strings.HasPrefix(m.Content, synapse.RepairLead) {
				repair = true
			} else {
				user = m.Content
			}
		}
	}
	q := synapse.Question(user)
	if strings.Contains(q, "[sim:malformed]") || (strings.Contains(q, "[sim:malformed-once]") && !repair) {
		return "Sure! Here is what I think, in plain words rather than JSON."
	}
	h := hash(q)
	round := roundOf(user)
	switch {
	case strings.HasPrefix(system, "You are Pathos"):
		return marshal(synapse.Manifest{
			Intent:          "answer: " + firstWords(q, 12),
			Domain:          []string{"general", "engineering", "science", "finance"}[h%4],
			Constraints:     []string{"be factual", "be concise"},
			SuccessCriteria: []string{"addresses the question directly"},
			Confidence:      0.85 + 0.1*frac(h, 1),
		})
	case strings.HasPrefix(system, "You are Logos"):
		if sol, ok := evalSolution(q, round, strings.Contains(user, "<feedback>"), sp); ok {
			return marshal(sol)
		}
		answer := fmt.Sprintf("Simulated answer (round %d) to: %s", round, firstWords(q, 24))
		if strings.Contains(user, "<feedback>") {
			answer += " Revised to address the verifier's feedback."
		}
		return marshal(synapse.Solution{
			Answer:     answer,
			Sources:    []string{"simulator://knowledge/" + hashHex(q)[:8]},
			Confidence: 0.8 + 0.15*frac(h, 2),
		})
	case strings.HasPrefix(system, "You are Ethos"):
		mean := math.Min(0.62+0.36*frac(h, 3)+0.12*float64(round-1), 0.98)
		v := synapse.Verification{Feedback: "Cite a concrete source and state the key assumption."}
		switch {
		case strings.Contains(q, "[sim:agree]"):
			mean, v.Feedback = 0.95, "Sound."
		case strings.Contains(q, "[sim:disagree]"):
			mean, v.Feedback = 0.30, "The answer does not settle the question; give evidence for each claim."
		}
		if strings.Contains(q, "[sim:violate]") {
			v.Violations = []string{"be concise"}
		}
		r := func(x float64) float64 { return math.Round(x*1e4) / 1e4 }
		v.Scores = synapse.Scores{Accuracy: r(mean), Relevance: r(math.Min(mean+0.02, 1)), Safety: r(math.Max(mean-0.02, 0))}
		return marshal(v)
	case strings.HasPrefix(system, "You are the Arbiter"):
		if v, ok := evalVerdict(q, user); ok {
			return marshal(v)
		}
		return marshal(synapse.Verdict{
			Answer:     "Arbiter's decision on: " + firstWords(q, 24),
			Confidence: 0.7 + 0.2*frac(h, 4),
			Note:       "The verifier's objections were weighed against the solver's last answer; the answer stands with the stated caveats.",
		})
	}
	return "This is the si inference simulator; it answers the Cloud Synapse agents. You said: " + firstWords(q, 40)
}

func roundOf(user string) int {
	_, rest, ok := strings.Cut(user, "\nRound: ")
	if !ok {
		return 1
	}
	n := 0
	for _, c := range rest {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
		if n > 1000 {
			break
		}
	}
	if n < 1 {
		return 1
	}
	return n
}

func hash(s string) uint64 {
	sum := sha256.Sum256([]byte(s))
	return binary.BigEndian.Uint64(sum[:8])
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x", sum[:8])
}

// frac derives the salt-th independent value in [0, 1) from h.
func frac(h uint64, salt uint64) float64 {
	x := h ^ (salt * 0x9e3779b97f4a7c15)
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return float64(x>>11) / float64(1<<53)
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = append(f[:n], "...")
	}
	return strings.Join(f, " ")
}

// tokens approximates a tokenizer: about four bytes a token, at least one.
func tokens(s string) int { return len(s)/4 + 1 }

func marshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error", "code": status}})
}
