package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/synapse"
)

// countingSim is a simulator that counts its model listings.
type countingSim struct {
	*simulator.Server
	lists atomic.Int64
}

func (s *countingSim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/models" {
		s.lists.Add(1)
	}
	s.Server.ServeHTTP(w, r)
}

// TestAdaptersLoadOnLogosBackend: with Logos on its own backend
// (--logos-llm-base-url), adapters are loaded into, and base models listed
// on, that backend, the one Logos asks with the adapter, not the shared one.
func TestAdaptersLoadOnLogosBackend(t *testing.T) {
	shared, logos := &countingSim{Server: simulator.New(simulator.Options{})}, &countingSim{Server: simulator.New(simulator.Options{})}
	hs, hl := httptest.NewServer(shared), httptest.NewServer(logos)
	t.Cleanup(hs.Close)
	t.Cleanup(hl.Close)
	inf := &activities.Inference{LLM: &llm.Client{BaseURL: hs.URL + "/v1"},
		Backends: map[synapse.Role]activities.Backend{synapse.Logos: {LLM: &llm.Client{BaseURL: hl.URL + "/v1"}}}}
	a := newAdapters(Options{Inference: inf, LoRACacheDir: t.TempDir(), LoRACapacity: 2})
	dir := filepath.Join(t.TempDir(), "lora_x")
	if err := lora.Scaffold(dir, lora.ScaffoldOptions{BaseModel: simulator.ModelSmall, Rank: 2, Hidden: 8}); err != nil {
		t.Fatal(err)
	}
	a.Cache.Fetch = func(context.Context, string) (string, error) { return dir, nil }
	if _, err := a.Cache.Ensure(context.Background(), "lora_x"); err != nil {
		t.Fatal(err)
	}
	if got := logos.LoadedLoRAs(); !slices.Equal(got, []string{"lora_x"}) || len(shared.LoadedLoRAs()) != 0 {
		t.Fatalf("loaded on logos's backend %v, on the shared one %v", got, shared.LoadedLoRAs())
	}
	if _, err := a.Served(context.Background()); err != nil {
		t.Fatal(err)
	}
	if logos.lists.Load() != 1 || shared.lists.Load() != 0 {
		t.Fatalf("base models listed %d times on logos's backend, %d on the shared one", logos.lists.Load(), shared.lists.Load())
	}

	// Without a Logos backend of its own, the shared one serves adapters.
	a = newAdapters(Options{Inference: &activities.Inference{LLM: inf.LLM}, LoRACacheDir: t.TempDir(), LoRACapacity: 2})
	a.Cache.Fetch = func(context.Context, string) (string, error) { return dir, nil }
	if _, err := a.Cache.Ensure(context.Background(), "lora_x"); err != nil || !slices.Equal(shared.LoadedLoRAs(), []string{"lora_x"}) {
		t.Fatalf("error %v; loaded on the shared backend %v", err, shared.LoadedLoRAs())
	}
}
