package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/superinstance/mesh/internal/store"
)

// A rate over nothing is no rate: with the only handover pending, si stats
// prints "-", not "0.0%", and --json gives null.
func TestStatsRateOverNothingIsADash(t *testing.T) {
	c := store.Conversion{InvitesSent: 0, HandoversStarted: 1, HandoversPending: 1}
	f := store.Funnel{Handovers: store.HandoverSteps{Started: 1, Opened: 1}}
	s := NewStats(c, f, nil)
	var out bytes.Buffer
	if err := s.Print(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if strings.Contains(text, "0.0%") || strings.Count(text, "accept rate -") != 2 {
		t.Fatalf("si stats with one pending handover:\n%s", text)
	}
	b, _ := json.Marshal(s)
	if !strings.Contains(string(b), `"handover_accept_rate":null`) || !strings.Contains(string(b), `"invite_accept_rate":null`) {
		t.Fatalf("--json: %s", b)
	}
	// Accepted then failed still counts as accepted; one declined makes it 1 of 2.
	c = store.Conversion{HandoversStarted: 2, HandoversFailed: 1, HandoversDeclined: 1}
	f = store.Funnel{Invites: store.InviteSteps{Sent: 4, Opened: 3, Accepted: 1},
		Handovers: store.HandoverSteps{Started: 2, Opened: 2, Accepted: 1}}
	out.Reset()
	if err := NewStats(c, f, nil).Print(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "accept rate 25.0%") || !strings.Contains(out.String(), "accept rate 50.0%") {
		t.Fatalf("si stats:\n%s", out.String())
	}
}
