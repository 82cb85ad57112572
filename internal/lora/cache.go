package lora

import (
	"container/list"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/superinstance/mesh/internal/llm"
)

// Backend is an inference server that loads adapters at run time (vLLM's
// /v1/load_lora_adapter contract).
type Backend interface {
	LoadLoRA(ctx context.Context, name, path string) error
	UnloadLoRA(ctx context.Context, name string) error
}

// Cache keeps a bounded set of adapters loaded in a backend, least recently
// used first out. Loading goes through Fetch, which puts the adapter's files
// in a directory the backend can read, then Backend.LoadLoRA.
//
// With Shared set, the loaded set lives there (PostgreSQL), so the worker
// replicas in front of one backend keep one set within Capacity between
// them; without it each Cache keeps its own in memory, and several over one
// backend may unload each other's adapters.
type Cache struct {
	Backend  Backend
	Capacity int
	// Fetch materializes adapter id's files and returns their directory.
	Fetch func(ctx context.Context, id string) (dir string, err error)
	// Shared, when set, holds the loaded set of the backend called Name
	// (its base URL) for every replica. Nil keeps the set in this Cache.
	Shared Shared
	Name   string

	mu       sync.Mutex
	order    *list.List // of string ids, most recently used at the front
	loaded   map[string]*list.Element
	inflight map[string]*load
	stats    CacheStats
}

// CacheStats counts what the cache did.
type CacheStats struct {
	Hits, Loads, Evictions int64
}

type load struct {
	done chan struct{}
	err  error
}

func (c *Cache) init() {
	if c.order == nil {
		c.order = list.New()
		c.loaded = map[string]*list.Element{}
		c.inflight = map[string]*load{}
	}
}

// Ensure makes id loaded and most recently used. It reports whether this
// call loaded it. Concurrent calls for one id share one load.
func (c *Cache) Ensure(ctx context.Context, id string) (bool, error) {
	if c.Shared != nil {
		return c.ensureShared(ctx, id)
	}
	c.mu.Lock()
	c.init()
	if e, ok := c.loaded[id]; ok {
		c.order.MoveToFront(e)
		c.stats.Hits++
		c.mu.Unlock()
		return false, nil
	}
	if l, ok := c.inflight[id]; ok {
		c.mu.Unlock()
		select {
		case <-l.done:
			return false, l.err
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	l := &load{done: make(chan struct{})}
	c.inflight[id] = l
	var victims []string
	capacity := max(c.Capacity, 1)
	for c.order.Len()+len(c.inflight) > capacity && c.order.Len() > 0 {
		e := c.order.Back()
		victim := e.Value.(string)
		c.order.Remove(e)
		delete(c.loaded, victim)
		victims = append(victims, victim)
		c.stats.Evictions++
	}
	c.mu.Unlock()

	l.err = c.load(ctx, id, victims)
	c.mu.Lock()
	delete(c.inflight, id)
	if l.err == nil {
		c.loaded[id] = c.order.PushFront(id)
		c.stats.Loads++
	}
	c.mu.Unlock()
	close(l.done)
	return l.err == nil, l.err
}

func (c *Cache) load(ctx context.Context, id string, victims []string) error {
	for _, v := range victims {
		if err := c.Backend.UnloadLoRA(ctx, v); err != nil && !isStatus(err, http.StatusNotFound) {
			return err
		}
	}
	dir, err := c.Fetch(ctx, id)
	if err != nil {
		return err
	}
	err = c.Backend.LoadLoRA(ctx, id, dir)
	if isStatus(err, http.StatusBadRequest) && strings.Contains(err.Error(), "already been loaded") {
		return nil // another worker sharing the backend loaded it
	}
	return err
}

// Forget drops id from the loaded set without asking the backend, for when
// the backend has lost it (it restarted, or another worker unloaded it).
func (c *Cache) Forget(id string) {
	if c.Shared != nil {
		ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		defer cancel()
		_ = c.Shared.DropLoRA(ctx, c.Name, id)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	if e, ok := c.loaded[id]; ok {
		c.order.Remove(e)
		delete(c.loaded, id)
	}
}

// Evict unloads id from the backend if this cache loaded it.
func (c *Cache) Evict(ctx context.Context, id string) error {
	if c.Shared != nil {
		if err := c.Shared.DropLoRA(ctx, c.Name, id); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.init()
	e, ok := c.loaded[id]
	if ok {
		c.order.Remove(e)
		delete(c.loaded, id)
	}
	c.mu.Unlock()
	err := c.Backend.UnloadLoRA(ctx, id)
	if err != nil && isStatus(err, http.StatusNotFound) {
		return nil
	}
	return err
}

// Loaded lists the loaded adapters, most recently used first.
func (c *Cache) Loaded() []string {
	if c.Shared != nil {
		ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		defer cancel()
		ids, _ := c.Shared.LoadedLoRAs(ctx, c.Name)
		return ids
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	out := make([]string, 0, c.order.Len())
	for e := c.order.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(string))
	}
	return out
}

// Stats returns the counters.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// IsNotLoaded reports whether err is the backend saying a model does not exist.
func IsNotLoaded(err error) bool { return isStatus(err, http.StatusNotFound) }

func isStatus(err error, status int) bool {
	var he *llm.HTTPError
	return errors.As(err, &he) && he.Status == status
}

// IsStatus4xx reports whether err is the backend refusing a request (a
// retry will not help).
func IsStatus4xx(err error) bool {
	var he *llm.HTTPError
	return errors.As(err, &he) && he.Status >= 400 && he.Status < 500 && he.Status != http.StatusTooManyRequests && he.Status != http.StatusRequestTimeout
}
