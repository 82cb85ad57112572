package simulator

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/lora"
)

const loadLatency = 150 * time.Millisecond

func TestLoRALoadTakesTheLoadLatency(t *testing.T) {
	_, c := serve(t, Options{LoadDelay: loadLatency})
	dir := filepath.Join(t.TempDir(), "x")
	if err := lora.Scaffold(dir, lora.ScaffoldOptions{BaseModel: ModelSmall, Rank: 2, Hidden: 8}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.LoadLoRA(context.Background(), "lora_x", dir); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < loadLatency {
		t.Fatalf("the load took %v, want at least %v", took, loadLatency)
	}
}

// TestColdStartLoadsTheAdapterOnFirstUse: with LoRADir, the first requests
// naming an adapter that is not loaded wait for one load; later ones do not.
func TestColdStartLoadsTheAdapterOnFirstUse(t *testing.T) {
	root := t.TempDir()
	if err := lora.Scaffold(filepath.Join(root, "lora_cold"), lora.ScaffoldOptions{BaseModel: ModelSmall, Rank: 2, Hidden: 8}); err != nil {
		t.Fatal(err)
	}
	s, c := serve(t, Options{LoadDelay: loadLatency, LoRADir: root})
	ctx := context.Background()
	hi := []llm.Message{{Role: "user", Content: "hi"}}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Chat(ctx, llm.Request{Model: "lora_cold", Messages: hi})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < loadLatency {
		t.Fatalf("the cold start took %v, want at least the load latency %v", took, loadLatency)
	}
	if s.ColdStarts() != 1 || len(s.LoadedLoRAs()) != 1 {
		t.Fatalf("%d cold starts, %v loaded; want one load shared by the four requests", s.ColdStarts(), s.LoadedLoRAs())
	}
	start = time.Now()
	if _, err := c.Chat(ctx, llm.Request{Model: "lora_cold", Messages: hi}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= loadLatency {
		t.Fatalf("a request to the loaded adapter took %v", took)
	}
	// Names that are not a directory under LoRADir stay unknown, at once.
	for _, name := range []string{"lora_none", "../" + filepath.Base(root), "..", ".", "a/b", filepath.Join(root, "lora_cold")} {
		start := time.Now()
		_, err := c.Chat(ctx, llm.Request{Model: name, Messages: hi})
		var he *llm.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusNotFound || time.Since(start) >= loadLatency {
			t.Errorf("model %q: %v after %v, want 404 at once", name, err, time.Since(start))
		}
	}
}

func TestWithoutLoRADirAnUnloadedAdapterIsNotFound(t *testing.T) {
	_, c := serve(t, Options{LoadDelay: loadLatency})
	_, err := c.Chat(context.Background(), llm.Request{Model: "lora_cold", Messages: []llm.Message{{Role: "user", Content: "hi"}}})
	var he *llm.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusNotFound {
		t.Fatalf("unknown adapter: %v", err)
	}
}

// FuzzColdStartName sends arbitrary model names to a simulator with a
// resolver directory holding one adapter, and another adapter beside that
// directory: only the one inside is ever loaded, under its own name.
func FuzzColdStartName(f *testing.F) {
	parent := f.TempDir()
	root := filepath.Join(parent, "adapters")
	for _, dir := range []string{filepath.Join(root, "lora_in"), filepath.Join(parent, "lora_out")} {
		if err := lora.Scaffold(dir, lora.ScaffoldOptions{BaseModel: ModelSmall, Rank: 2, Hidden: 8}); err != nil {
			f.Fatal(err)
		}
	}
	s := New(Options{LoRADir: root})
	for _, n := range []string{"lora_in", "../lora_out", "lora_in/", "..", "", "lora_in\x00", `..\lora_out`} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, name string) {
		ok := s.resolve(context.Background(), name)
		if ok != (name == "lora_in") {
			t.Fatalf("resolve(%q) = %v", name, ok)
		}
		for _, l := range s.LoadedLoRAs() {
			if l != "lora_in" {
				t.Fatalf("resolve(%q) loaded %q", name, l)
			}
		}
	})
}
