package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// Two hubs' kernels both number their calls from 1: a hub's event id is
// its own, so another device sending the same id first must not keep this
// device's record out (it would, were event ids unique across devices).
func TestHubUsageEventIDsArePerDevice(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "acme")
	harness.EnsureAccount(t, s, "globex")
	victim, other := harness.UniqueID("gpu-victim"), harness.UniqueID("gpu-other")
	if err := s.RegisterCert(ctx, victim, "acme", "s-1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterCert(ctx, other, "globex", "s-2", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	rec := func(device string, tokens int) store.HubUsage {
		return store.HubUsage{EventID: "call-1", DeviceID: device, Project: "default", Model: "m", PromptTokens: tokens, ServedAt: time.Now()}
	}
	for _, u := range []store.HubUsage{rec(other, 1), rec(victim, 2), rec(victim, 2)} {
		if err := s.RecordHubUsage(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	for dev, want := range map[string]int{victim: 1, other: 1} {
		if n, err := s.HubUsageCount(ctx, dev); err != nil || n != want {
			t.Errorf("device %s has %d records (%v), want %d", dev, n, err, want)
		}
	}
}
