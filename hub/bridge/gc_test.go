package bridge_test

import (
	"os"
	"runtime/debug"
	"testing"

	"github.com/superinstance/mesh/hub/bridge"
)

func TestTuneGCLeavesAnOperatorsGOGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "")
	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
	got, restore := bridge.TuneGC()
	if now := debug.SetGCPercent(-1); got != bridge.GCPercent || now != bridge.GCPercent {
		t.Fatalf("with no GOGC: TuneGC says %d, the collector is at %d; want %d", got, now, bridge.GCPercent)
	}
	debug.SetGCPercent(bridge.GCPercent)
	restore()
	if now := debug.SetGCPercent(-1); now != 100 {
		t.Fatalf("restored to %d, want 100", now)
	}

	// The operator's GOGC (the runtime read it at start; here it is set
	// by hand as the runtime would have) is left as it is.
	debug.SetGCPercent(150)
	t.Setenv("GOGC", "150")
	got, restore = bridge.TuneGC()
	now := debug.SetGCPercent(150)
	restore()
	if got != 150 || now != 150 {
		t.Fatalf("with GOGC=150: TuneGC says %d, the collector is at %d", got, now)
	}
}
