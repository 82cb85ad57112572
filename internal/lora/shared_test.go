package lora_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// backend is one inference server that several worker replicas share; it
// refuses double loads as vLLM does and remembers the most it held at once.
type backend struct {
	mu     sync.Mutex
	loaded map[string]bool
	loads  int
	most   int
}

func (b *backend) LoadLoRA(_ context.Context, name, _ string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.loaded[name] {
		return &llm.HTTPError{Status: http.StatusBadRequest, Message: fmt.Sprintf("The lora adapter '%s' has already been loaded.", name)}
	}
	b.loaded[name] = true
	b.loads++
	b.most = max(b.most, len(b.loaded))
	return nil
}

func (b *backend) UnloadLoRA(_ context.Context, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.loaded[name] {
		return &llm.HTTPError{Status: http.StatusNotFound, Message: "not found"}
	}
	delete(b.loaded, name)
	return nil
}

// Two worker replicas over one backend keep one loaded set in PostgreSQL:
// together they never hold more than the capacity, an adapter one loaded is
// a hit for the other, and the one evicted is the least recently used by
// either of them.
func TestReplicasShareOneLoadedSet(t *testing.T) {
	st := harness.Store(t)
	be := &backend{loaded: map[string]bool{}}
	fetch := func(_ context.Context, id string) (string, error) { return "/cache/" + id, nil }
	replica := func() *lora.Cache {
		return &lora.Cache{Backend: be, Capacity: 2, Fetch: fetch, Shared: st, Name: "http://vllm:8000/v1"}
	}
	a, b := replica(), replica()
	ctx := context.Background()
	use := func(c *lora.Cache, id string) bool {
		t.Helper()
		loaded, err := c.Ensure(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return loaded
	}
	use(a, "x")
	use(a, "y")
	if use(b, "x") {
		t.Fatal("replica b loaded x again; replica a had loaded it")
	}
	// x was used last (by b): z evicts y, the least recently used by either.
	use(b, "z")
	if be.most > 2 {
		t.Fatalf("the backend held %d adapters at once; the capacity is 2", be.most)
	}
	if be.loaded["y"] || !be.loaded["x"] || !be.loaded["z"] {
		t.Fatalf("backend holds %v, want x and z (y was the least recently used)", be.loaded)
	}
	if use(a, "x") || use(a, "z") {
		t.Fatal("replica a reloaded an adapter the shared set holds")
	}
	if got := a.Loaded(); len(got) != 2 {
		t.Fatalf("replica a sees %v loaded, want the shared two", got)
	}
	if be.loads != 3 {
		t.Fatalf("%d loads, want 3 (x, y, z once each)", be.loads)
	}
}
