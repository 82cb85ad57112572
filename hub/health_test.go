package hub

import (
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/store"
)

func TestPolicy(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	ok := store.Hub{DeviceID: "g", Connected: true, LastSeen: now.Add(-2 * time.Second), GPULoad: 0.5, GPUTempC: 60}
	cases := []struct {
		name   string
		mutate func(*store.Hub)
		want   string
	}{
		{"healthy", func(*store.Hub) {}, ""},
		{"offline", func(h *store.Hub) { h.Connected = false }, "offline"},
		{"silent", func(h *store.Hub) { h.LastSeen = now.Add(-16 * time.Second) }, "silent for 16s"},
		{"at load limit", func(h *store.Hub) { h.GPULoad = 0.95 }, ""},
		{"overloaded", func(h *store.Hub) { h.GPULoad = 0.96 }, "GPU load 96%"},
		{"just below temp", func(h *store.Hub) { h.GPUTempC = 84.9 }, ""},
		{"too hot", func(h *store.Hub) { h.GPUTempC = 85 }, "too hot"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := ok
			tc.mutate(&h)
			healthy, reason := Policy{}.Check(h, now)
			if healthy != (tc.want == "") || !strings.Contains(reason, tc.want) {
				t.Fatalf("healthy %v reason %q, want %q", healthy, reason, tc.want)
			}
		})
	}
}
