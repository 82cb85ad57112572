package agent

import (
	"fmt"
	"time"

	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// Prewarm decides when a hub asks the cloud to get ready: when any GPU's load
// goes over LoadHigh or its temperature over TempHigh. It stays hot until
// every GPU is back under LoadLow and TempLow (hysteresis), and signals at
// most once per MinInterval while hot. The zero value uses 0.8/0.7,
// 80/75 °C and one minute.
//
// A signal names the adapters of the hub's Recent latest escalations (most
// recent first; default DefaultPrewarmRecent, at most wire.MaxPrewarmLoRAs),
// or LoRA when none named one; empty LoRA names nothing then. The cloud
// loads only those the device's account may use.
type Prewarm struct {
	LoadHigh, LoadLow float64
	TempHigh, TempLow float64
	MinInterval       time.Duration
	Recent            int
	LoRA              string

	hot  bool
	last time.Time
}

func (p *Prewarm) defaults() {
	if p.LoadHigh == 0 {
		p.LoadHigh = 0.8
	}
	if p.LoadLow == 0 {
		p.LoadLow = 0.7
	}
	if p.TempHigh == 0 {
		p.TempHigh = 80
	}
	if p.TempLow == 0 {
		p.TempLow = 75
	}
	if p.MinInterval == 0 {
		p.MinInterval = time.Minute
	}
}

// Hot reports whether the hub is in the hot state.
func (p *Prewarm) Hot() bool { return p.hot }

// Observe takes a reading and returns the signal to send, or nil.
func (p *Prewarm) Observe(v *meshv1.HardwareVitals, now time.Time) *meshv1.PrewarmSignal {
	p.defaults()
	var load, temp float64
	var gpu uint32
	for _, g := range v.GetGpus() {
		l := float64(g.GetUtilizationPercent()) / 100
		t := float64(g.GetTemperatureC())
		if l > load || t > temp {
			gpu = g.GetIndex()
		}
		load, temp = max(load, l), max(temp, t)
	}
	if p.hot {
		p.hot = load > p.LoadLow || temp > p.TempLow
	} else {
		p.hot = load > p.LoadHigh || temp > p.TempHigh
	}
	if !p.hot || (!p.last.IsZero() && now.Sub(p.last) < p.MinInterval) {
		return nil
	}
	p.last = now
	reason := fmt.Sprintf("GPU load %.0f%%", load*100)
	if temp > p.TempHigh || load <= p.LoadHigh {
		reason = fmt.Sprintf("GPU at %.0f°C", temp)
	}
	return &meshv1.PrewarmSignal{Reason: reason, GpuIndex: gpu, GpuLoad: load, TemperatureC: temp, SentUnixNano: now.UnixNano()}
}
