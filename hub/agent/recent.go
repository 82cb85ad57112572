package agent

import (
	"sync"

	"github.com/superinstance/mesh/hub/wire"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// DefaultPrewarmRecent is how many adapters of its latest escalations a
// hub's pre-warm signal names unless Prewarm.Recent says otherwise.
const DefaultPrewarmRecent = 3

// recentLoRAs remembers the adapters the hub's escalations named, most
// recent first, each once. The zero value is ready; it is safe for
// concurrent use (escalations arrive from the local API while the
// heartbeat loop reads it).
type recentLoRAs struct {
	mu  sync.Mutex
	ids []string
}

// note moves id to the front, keeping at most wire.MaxPrewarmLoRAs; an
// empty id (an escalation without an adapter) changes nothing.
func (r *recentLoRAs) note(id string) {
	if id == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, min(len(r.ids)+1, wire.MaxPrewarmLoRAs))
	out = append(out, id)
	for _, x := range r.ids {
		if x != id && len(out) < wire.MaxPrewarmLoRAs {
			out = append(out, x)
		}
	}
	r.ids = out
}

// list returns up to n adapters, most recent first.
func (r *recentLoRAs) list(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids[:min(n, len(r.ids))]...)
}

// RecentLoRAs lists the adapters the hub's latest escalations named, most
// recent first: what its next pre-warm signal asks the cloud to load.
func (a *Agent) RecentLoRAs() []string { return a.recent.list(a.opts.Prewarm.recent()) }

// namePrewarm fills in the adapters sig asks the cloud to load: those of
// the latest escalations, else the one the hub's owner configured.
func (a *Agent) namePrewarm(sig *meshv1.PrewarmSignal) {
	ids := a.RecentLoRAs()
	if len(ids) == 0 && a.opts.Prewarm.LoRA != "" {
		ids = []string{a.opts.Prewarm.LoRA}
	}
	if len(ids) > 0 {
		sig.Lora, sig.Loras = ids[0], ids
	}
}

func (p *Prewarm) recent() int {
	switch {
	case p.Recent <= 0:
		return DefaultPrewarmRecent
	case p.Recent > wire.MaxPrewarmLoRAs:
		return wire.MaxPrewarmLoRAs
	}
	return p.Recent
}
