package lora

import (
	"context"
	"time"
)

// Claim is what Shared.ClaimLoRA found.
type Claim int

// Claims.
const (
	// Claimed: the caller loads the adapter, after unloading the victims.
	Claimed Claim = iota
	// Hit: the adapter is loaded; it is now the most recently used.
	Hit
	// Loading: another replica is loading it; ask again shortly.
	Loading
)

// Shared is the loaded set of a backend that several Caches share
// (store.Store implements it in PostgreSQL).
type Shared interface {
	// ClaimLoRA finds id in backend's set. Unless it is a Hit or Loading,
	// the caller now holds its load, and the victims (removed from the set)
	// are the adapters to unload so the set stays within capacity.
	ClaimLoRA(ctx context.Context, backend, id string, capacity int) (c Claim, victims []string, err error)
	// ReadyLoRA marks the caller's load of id done.
	ReadyLoRA(ctx context.Context, backend, id string) error
	// DropLoRA removes id from the set.
	DropLoRA(ctx context.Context, backend, id string) error
	// LoadedLoRAs lists the set, most recently used first.
	LoadedLoRAs(ctx context.Context, backend string) ([]string, error)
}

// sharedTimeout bounds the Shared calls that have no context of their own.
const sharedTimeout = 5 * time.Second

// loadingPoll is how often a replica asks again while another loads.
const loadingPoll = 100 * time.Millisecond

func (c *Cache) ensureShared(ctx context.Context, id string) (bool, error) {
	capacity := max(c.Capacity, 1)
	for {
		claim, victims, err := c.Shared.ClaimLoRA(ctx, c.Name, id, capacity)
		if err != nil {
			return false, err
		}
		switch claim {
		case Hit:
			c.count(func(s *CacheStats) { s.Hits++ })
			return false, nil
		case Loading:
			t := time.NewTimer(loadingPoll)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return false, ctx.Err()
			}
		}
		if err := c.load(ctx, id, victims); err != nil {
			// Nothing of id is loaded; the victims are out of the set either way.
			_ = c.Shared.DropLoRA(context.WithoutCancel(ctx), c.Name, id)
			return false, err
		}
		if err := c.Shared.ReadyLoRA(ctx, c.Name, id); err != nil {
			return false, err
		}
		c.count(func(s *CacheStats) { s.Loads++; s.Evictions += int64(len(victims)) })
		return true, nil
	}
}

func (c *Cache) count(f func(*CacheStats)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(&c.stats)
}
