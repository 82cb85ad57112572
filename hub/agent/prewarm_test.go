package agent

import (
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/superinstance/mesh/hub/wire"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

func reading(util, temp uint32) *meshv1.HardwareVitals {
	return &meshv1.HardwareVitals{Gpus: []*meshv1.GPUVitals{{Index: 0, UtilizationPercent: 10, TemperatureC: 40}, {Index: 1, UtilizationPercent: util, TemperatureC: temp}}}
}

func TestPrewarmThresholdsAndHysteresis(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	steps := []struct {
		name       string
		util, temp uint32
		at         time.Duration
		signal     bool
		hot        bool
	}{
		{"cool", 50, 60, 0, false, false},
		{"load at 0.8 is not over", 80, 60, time.Second, false, false},
		{"load over 0.8", 81, 60, 2 * time.Second, true, true},
		{"still hot, rate limited", 90, 60, 3 * time.Second, false, true},
		{"between low and high stays hot", 75, 60, 4 * time.Second, false, true},
		{"under low cools", 69, 60, 5 * time.Second, false, false},
		{"hot again within a minute: rate limited", 85, 60, 30 * time.Second, false, true},
		{"hot a minute after the last signal", 85, 60, 62 * time.Second, true, true},
		{"cool", 10, 40, 70 * time.Second, false, false},
		{"temperature over 80", 10, 81, 200 * time.Second, true, true},
		{"77°C is between low and high", 10, 77, 201 * time.Second, false, true},
		{"74°C cools", 10, 74, 202 * time.Second, false, false},
		{"80°C is not over", 10, 80, 300 * time.Second, false, false},
	}
	var p Prewarm
	for _, s := range steps {
		sig := p.Observe(reading(s.util, s.temp), t0.Add(s.at))
		if (sig != nil) != s.signal || p.Hot() != s.hot {
			t.Fatalf("%s: signal %v hot %v, want %v %v", s.name, sig, p.Hot(), s.signal, s.hot)
		}
		if sig != nil && sig.GpuIndex != 1 {
			t.Fatalf("%s: signal names GPU %d, want the hot one", s.name, sig.GpuIndex)
		}
	}
}

func TestPrewarmNoGPU(t *testing.T) {
	var p Prewarm
	if sig := p.Observe(&meshv1.HardwareVitals{NoGpuReason: "no GPU"}, time.Now()); sig != nil || p.Hot() {
		t.Fatal("a machine without GPUs never pre-warms")
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Rand: func() float64 { return 0.999999 }}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.Next(); got > w*time.Millisecond || got < w*time.Millisecond/2 {
			t.Fatalf("attempt %d: %v, want within [%v, %v]", i, got, w*time.Millisecond/2, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Bound(); got != 100*time.Millisecond {
		t.Fatalf("bound after reset %v", got)
	}
	low := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Rand: func() float64 { return 0 }}
	if got := low.Next(); got != 50*time.Millisecond {
		t.Fatalf("jitter floor %v", got)
	}
}

// TestPrewarmOnRealH100Reading feeds the policy a reading the NVML reader
// took from an H100 under a bf16 matmul load (util 100%, 700 W, clocks
// limited by the software power cap).
func TestPrewarmOnRealH100Reading(t *testing.T) {
	b, err := os.ReadFile("testdata/h100_loaded.json")
	if err != nil {
		t.Fatal(err)
	}
	var v meshv1.HardwareVitals
	if err := protojson.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if err := wire.ValidateVitals(&v); err != nil {
		t.Fatalf("the real reading does not validate: %v", err)
	}
	g := v.GetGpus()[0]
	if !strings.Contains(g.GetName(), "H100") || g.GetUtilizationPercent() < 95 || len(g.GetThrottleReasonNames()) == 0 {
		t.Fatalf("fixture %v", g)
	}
	var p Prewarm
	sig := p.Observe(&v, time.Now())
	if sig == nil || sig.GetGpuLoad() < 0.95 || !strings.Contains(sig.GetReason(), "GPU load") {
		t.Fatalf("a fully loaded H100 must pre-warm: %v", sig)
	}
}
