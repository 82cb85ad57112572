package bench

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMergedReport: with merge set, a run's figures are added to the
// report already written (this run's win); without it, or with no report
// there yet, they are the report; a report that is not JSON is an error.
func TestMergedReport(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bench-report.json")
	mine := map[string]float64{"b": 3, "c": 4}
	if got, err := merged(path, mine, true); err != nil || !maps.Equal(got, mine) {
		t.Errorf("merged into no report: %v, %v; want %v", got, err, mine)
	}
	if err := os.WriteFile(path, []byte(`{"a": 1, "b": 2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"a": 1, "b": 3, "c": 4}
	if got, err := merged(path, mine, true); err != nil || !maps.Equal(got, want) {
		t.Errorf("merged: %v, %v; want %v", got, err, want)
	}
	if got, err := merged(path, mine, false); err != nil || !maps.Equal(got, mine) {
		t.Errorf("not merged: %v, %v; want this run's %v alone", got, err, mine)
	}
	if err := os.WriteFile(path, []byte(`{"a": `), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := merged(path, mine, true); err == nil {
		t.Error("merged into a report cut short: no error")
	}
}

// TestSpoiledBy: what a missed window's note blames is what beside the
// peer and its hubs took the machine: other processes' half core, the
// host's quarter core of steal, a machine stall of stallSpoils or longer,
// or a collection; a window missed with the machine to itself blames
// nothing.
func TestSpoiledBy(t *testing.T) {
	for _, c := range []struct {
		name string
		res  levelResult
		want string
	}{
		{"machine to itself", levelResult{cpu: cpuSplit{others: 0.49, stolen: 0.24}, stall: stallSpoils - time.Millisecond}, ""},
		{"stall not measured", levelResult{stall: -1}, ""},
		{"stall at the threshold", levelResult{stall: stallSpoils}, "the machine stalled for 100ms (a real-time thread woke that late)"},
		{"machine stall", levelResult{stall: 1600 * time.Millisecond}, "the machine stalled for 1.6s (a real-time thread woke that late)"},
		{"other processes", levelResult{cpu: cpuSplit{others: 0.5}}, "other processes took 0.50 cores"},
		{"steal", levelResult{cpu: cpuSplit{stolen: 0.37}}, "the host took 0.37 cores (steal)"},
		{"server collection", levelResult{server: runtimeWindow{GCs: 1}}, "the server process ran 1 collections"},
		{"steal and hubs' collection", levelResult{cpu: cpuSplit{stolen: 0.25}, child: runtimeWindow{GCs: 2}},
			"the host took 0.25 cores (steal) and the simulated hubs ran 2 collections"},
	} {
		if got := spoiledBy(c.res); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// TestRemeasured: the figure counts the levels measured in a second window,
// and the held level's note names none when nothing held.
func TestRemeasured(t *testing.T) {
	first := &levelResult{hubs: 500, p99: 60 * time.Millisecond}
	rs := []levelResult{{hubs: 500, firstTry: first}, {hubs: 1000}, {hubs: 1500, firstTry: first}}
	if n := remeasuredCount(rs); n != 2 {
		t.Errorf("remeasuredCount: %d, want 2", n)
	}
	if n := remeasuredCount(nil); n != 0 {
		t.Errorf("remeasuredCount(nil): %d, want 0", n)
	}
	failed := []levelResult{{hubs: 500}, {hubs: 1000, beats: 5000, dialErr: "connecting hub 612: timeout"}}
	if got := missedOf(failed); got != "at 1000, whose hubs could not all connect: connecting hub 612: timeout" {
		t.Errorf("missedOf a level that could not connect: %q", got)
	}
	if failed[1].held() {
		t.Error("a level whose hubs could not all connect held")
	}
	if got := heldNote(levelResult{}); got != "no level held" {
		t.Errorf("heldNote of no level: %q", got)
	}
	if got := heldNote(levelResult{hubs: 500, stall: 12 * time.Millisecond}); !strings.Contains(got, "longest machine stall 12ms") {
		t.Errorf("heldNote without the stall: %q", got)
	}
}
