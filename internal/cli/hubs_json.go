package cli

import (
	"encoding/json"
	"time"

	"github.com/superinstance/mesh/internal/store"
)

// hubRow is a hub as si hubs prints it, with the bridge's health verdict;
// --json prints it under these names (store.Hub has none of its own).
type hubRow struct {
	DeviceID       string          `json:"device_id"`
	Account        string          `json:"account"`
	Version        string          `json:"version"`
	Hostname       string          `json:"hostname"`
	Bridge         string          `json:"bridge"`
	Link           string          `json:"link"` // online, offline or never connected
	NeverConnected bool            `json:"never_connected,omitempty"`
	Connected      bool            `json:"connected"`
	BridgeDead     bool            `json:"bridge_dead,omitempty"` // its bridge stopped beating
	Features       []string        `json:"features,omitempty"`
	ConnectedAt    *time.Time      `json:"connected_at,omitempty"`
	LastSeen       time.Time       `json:"last_seen"`
	RTTMicros      int             `json:"rtt_micros"`
	GPUCount       int             `json:"gpu_count"`
	GPULoad        float64         `json:"gpu_load"`
	GPUTempC       float64         `json:"gpu_temp_c"`
	CPULoad        float64         `json:"cpu_load"`
	NVML           bool            `json:"nvml"`
	Vitals         json.RawMessage `json:"vitals,omitempty"` // protojson HardwareVitals
	Reconnects     int             `json:"reconnects"`
	Healthy        bool            `json:"healthy"`
	Health         string          `json:"health"`
}

func newHubRow(h store.Hub, healthy bool, health string) hubRow {
	return hubRow{DeviceID: h.DeviceID, Account: h.Account, Version: h.Version, Hostname: h.Hostname, Bridge: h.Bridge,
		Connected: h.Connected, BridgeDead: h.BridgeDead, Features: h.Features, ConnectedAt: h.ConnectedAt, LastSeen: h.LastSeen, RTTMicros: h.RTTMicros, GPUCount: h.GPUCount,
		GPULoad: h.GPULoad, GPUTempC: h.GPUTempC, CPULoad: h.CPULoad, NVML: h.NVML, Vitals: h.Vitals, Reconnects: h.Reconnects,
		Healthy: healthy, Health: health}
}
