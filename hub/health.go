// Package hub holds what runs on and about GPU hubs: the health policy that
// placement applies to the bridge's view of a hub. The agent, the bridge,
// the wire format and the vitals reader are its subpackages.
package hub

import (
	"fmt"
	"strings"
	"time"

	"github.com/superinstance/mesh/internal/store"
)

// Policy says when a hub may take new inference. The zero value uses the defaults.
type Policy struct {
	// MaxSilence: a hub not heard from for longer is offline. Default 15s (three heartbeats).
	MaxSilence time.Duration
	// MaxGPULoad: a hub whose busiest GPU is above this is overloaded. Default 0.95.
	MaxGPULoad float64
	// MaxTempC: a hub whose hottest GPU is at or above this is too hot. Default 85.
	MaxTempC float64
}

func (p Policy) withDefaults() Policy {
	if p.MaxSilence == 0 {
		p.MaxSilence = 15 * time.Second
	}
	if p.MaxGPULoad == 0 {
		p.MaxGPULoad = 0.95
	}
	if p.MaxTempC == 0 {
		p.MaxTempC = 85
	}
	return p
}

// Online says whether h's link is up at now: the registry says connected
// through a live bridge and the hub was heard from within MaxSilence. A
// bridge killed without closing its links stops beating, and its hubs are
// offline within store.BridgeStale (h.Connected is false); a bridge that
// predates the liveness beat leaves them to the age rule.
func (p Policy) Online(h store.Hub, now time.Time) bool {
	p = p.withDefaults()
	return h.Connected && now.Sub(h.LastSeen) <= p.MaxSilence
}

// Check says whether h may take new inference at now, and if not, why.
func (p Policy) Check(h store.Hub, now time.Time) (bool, string) {
	p = p.withDefaults()
	switch {
	case h.BridgeDead:
		return false, fmt.Sprintf("hub %s is offline: its bridge %s stopped (no liveness beat for %s)", h.DeviceID, h.Bridge, store.BridgeStale)
	case !h.Connected:
		return false, "hub " + h.DeviceID + " is offline"
	case now.Sub(h.LastSeen) > p.MaxSilence:
		return false, fmt.Sprintf("hub %s silent for %s", h.DeviceID, now.Sub(h.LastSeen).Round(time.Second))
	case h.GPULoad > p.MaxGPULoad:
		return false, fmt.Sprintf("hub %s GPU load %.0f%% is over %.0f%%", h.DeviceID, h.GPULoad*100, p.MaxGPULoad*100)
	case h.GPUTempC >= p.MaxTempC:
		return false, fmt.Sprintf("hub %s GPU at %.0f°C is too hot (limit %.0f°C)", h.DeviceID, h.GPUTempC, p.MaxTempC)
	}
	return true, ""
}

// QueuePrefix starts every hub's task queue: hub.<device-id>.
const QueuePrefix = "hub."

// Queue is the task queue of the hub with the given device id.
func Queue(deviceID string) string { return QueuePrefix + deviceID }

// DeviceOf returns the device id of a hub queue, or "" for any other queue.
func DeviceOf(queue string) string {
	id, ok := strings.CutPrefix(queue, QueuePrefix)
	if !ok {
		return ""
	}
	return id
}
