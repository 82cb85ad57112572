package bench

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
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
