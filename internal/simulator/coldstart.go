package simulator

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/superinstance/mesh/internal/lora"
)

// DefaultLoRALoadLatency is the adapter load time the simulator's commands
// default to (si simulator --lora-load-latency, si dev
// --sim-lora-load-latency): about what vLLM takes to read a small adapter
// and make it servable, so that a cold start costs what it would. The zero
// Options load at once.
const DefaultLoRALoadLatency = 2 * time.Second

// maxLoRAName bounds an adapter name the resolver looks up on disk.
const maxLoRAName = 128

// resolve loads name from Options.LoRADir/<name> when a request names an
// adapter that is not loaded (vLLM's filesystem LoRA resolver): the
// request's cold start, taking LoadDelay. Concurrent requests for one name
// share one load. It reports whether name is loaded now.
func (s *Server) resolve(ctx context.Context, name string) bool {
	if s.opts.LoRADir == "" || len(name) > maxLoRAName || name == "." || name == ".." ||
		strings.ContainsAny(name, `/\`) || filepath.Base(name) != name {
		return false
	}
	dir := filepath.Join(s.opts.LoRADir, name)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return false
	}
	s.mu.Lock()
	if _, ok := s.loras[name]; ok {
		s.mu.Unlock()
		return true
	}
	wait, loading := s.resolving[name]
	if !loading {
		wait = make(chan struct{})
		if s.resolving == nil {
			s.resolving = map[string]chan struct{}{}
		}
		s.resolving[name] = wait
	}
	s.mu.Unlock()
	if loading {
		select {
		case <-wait:
		case <-ctx.Done():
			return false
		}
		s.mu.Lock()
		_, ok := s.loras[name]
		s.mu.Unlock()
		return ok
	}
	defer func() {
		s.mu.Lock()
		delete(s.resolving, name)
		s.mu.Unlock()
		close(wait)
	}()
	// The load runs to its end even if this request goes away, as a
	// server's would; a failed load leaves the adapter unloaded.
	if sleep(context.WithoutCancel(ctx), s.opts.LoadDelay) != nil || s.opts.FailLoad {
		return false
	}
	a, err := lora.Open(dir)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.loras[name]; !ok {
		s.loras[name] = adapter{path: dir, base: a.Config.BaseModel}
	}
	s.coldStarts++
	return true
}

// ColdStarts is the number of adapters loaded by the resolver, on the
// first request that named them.
func (s *Server) ColdStarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.coldStarts
}
