package cli

import (
	"strings"
	"testing"

	"github.com/superinstance/mesh/workflows"
)

// TestEstimatedUsageWarning: si ask warns once when any step's usage was
// estimated, and says nothing when the server reported every step's.
func TestEstimatedUsageWarning(t *testing.T) {
	reported := workflows.ConsensusState{StepLog: []workflows.StepRecord{{ID: "r1-logos"}, {ID: "r1-ethos"}}}
	if w := estimatedWarning(reported); w != "" {
		t.Fatalf("warned %q of a run whose usage was all reported", w)
	}
	est := workflows.ConsensusState{StepLog: []workflows.StepRecord{
		{ID: "r1-pathos", Agent: "pathos", UsageEstimated: true}, {ID: "r1-logos"}, {ID: "r1-ethos", Agent: "ethos", UsageEstimated: true}}}
	w := estimatedWarning(est)
	if strings.Count(w, "\n") != 1 || !strings.HasPrefix(w, "warning") || !strings.Contains(w, "2 of 3 steps") || !strings.Contains(w, "estimated") {
		t.Fatalf("warning %q: want one line naming 2 of 3 steps estimated", w)
	}
}
