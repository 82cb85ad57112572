package lora

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/superinstance/mesh/internal/llm"
)

// recorder is a backend that records calls and refuses double loads as vLLM does.
type recorder struct {
	mu     sync.Mutex
	loaded map[string]bool
	calls  []string
	fail   error
}

func (r *recorder) LoadLoRA(_ context.Context, name, path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "load "+name)
	if r.fail != nil {
		return r.fail
	}
	if r.loaded[name] {
		return &llm.HTTPError{Status: http.StatusBadRequest, Message: fmt.Sprintf("The lora adapter '%s' has already been loaded.", name)}
	}
	r.loaded[name] = true
	return nil
}

func (r *recorder) UnloadLoRA(_ context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "unload "+name)
	if !r.loaded[name] {
		return &llm.HTTPError{Status: http.StatusNotFound, Message: "not found"}
	}
	delete(r.loaded, name)
	return nil
}

func newCache(capacity int) (*Cache, *recorder, *atomic.Int64) {
	r := &recorder{loaded: map[string]bool{}}
	var fetches atomic.Int64
	return &Cache{Backend: r, Capacity: capacity, Fetch: func(_ context.Context, id string) (string, error) {
		fetches.Add(1)
		return "/cache/" + id, nil
	}}, r, &fetches
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	c, r, _ := newCache(2)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "a", "c"} {
		if _, err := c.Ensure(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// b was least recently used when c arrived.
	if got := c.Loaded(); !slices.Equal(got, []string{"c", "a"}) {
		t.Fatalf("loaded = %v, want [c a]", got)
	}
	if r.loaded["b"] || !r.loaded["a"] || !r.loaded["c"] {
		t.Fatalf("backend holds %v", r.loaded)
	}
	// b comes back: it is loaded again and a (now LRU) goes.
	loaded, err := c.Ensure(ctx, "b")
	if err != nil || !loaded {
		t.Fatalf("reload b = %v, %v", loaded, err)
	}
	want := []string{"load a", "load b", "unload b", "load c", "unload a", "load b"}
	if !slices.Equal(r.calls, want) {
		t.Fatalf("calls = %v, want %v", r.calls, want)
	}
	if s := c.Stats(); s.Hits != 1 || s.Loads != 4 || s.Evictions != 2 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestCacheConcurrentEnsureLoadsOnce(t *testing.T) {
	c, r, fetches := newCache(4)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := c.Ensure(context.Background(), "x"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if fetches.Load() != 1 || len(r.calls) != 1 {
		t.Fatalf("fetched %d times, backend calls %v", fetches.Load(), r.calls)
	}
}

func TestCacheLoadFailureIsNotCached(t *testing.T) {
	c, r, _ := newCache(2)
	r.fail = errors.New("boom")
	if _, err := c.Ensure(context.Background(), "x"); err == nil {
		t.Fatal("failed load reported success")
	}
	if len(c.Loaded()) != 0 {
		t.Fatalf("loaded = %v after a failure", c.Loaded())
	}
	r.fail = nil
	if loaded, err := c.Ensure(context.Background(), "x"); err != nil || !loaded {
		t.Fatalf("retry = %v, %v", loaded, err)
	}
}

func TestCacheAdoptsAdapterAnotherWorkerLoaded(t *testing.T) {
	c, r, _ := newCache(2)
	r.loaded["x"] = true
	if _, err := c.Ensure(context.Background(), "x"); err != nil {
		t.Fatalf("already loaded by someone else: %v", err)
	}
	c.Forget("x")
	if len(c.Loaded()) != 0 {
		t.Fatal("Forget kept x")
	}
	if err := c.Evict(context.Background(), "never-loaded"); err != nil {
		t.Fatalf("evicting an unknown adapter: %v", err)
	}
}
