package agent

import (
	"testing"
	"time"

	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// A usage record the bridge does not ack (its ledger was down for a moment)
// is sent again while the link stays up, every UsageResend, until the ack
// comes; an id sent twice keeps the first record, which is the one billed.
func TestUnackedUsageIsSentAgainOnTheSameLink(t *testing.T) {
	a := New(Options{})
	var sent []*meshv1.HubMessage
	a.ctlSend = func(m *meshv1.HubMessage) error { sent = append(sent, m); return nil }
	first := &meshv1.UsageRecord{EventId: "k-1", Model: "llama", PromptTokens: 10}
	if err := a.RecordUsage(first); err != nil {
		t.Fatal(err)
	}
	if err := a.RecordUsage(&meshv1.UsageRecord{EventId: "k-1", Model: "llama", PromptTokens: 99999}); err != nil {
		t.Fatal(err)
	}
	for i, m := range sent {
		if got := m.GetUsage().GetPromptTokens(); got != 10 {
			t.Errorf("send %d carried %d prompt tokens, want the kept record's 10", i, got)
		}
	}
	now := time.Now()
	if due := a.dueUsage(now); len(due) != 0 {
		t.Fatalf("sent again at once: %v", due)
	}
	if due := a.dueUsage(now.Add(UsageResend)); len(due) != 1 || due[0].GetEventId() != "k-1" || due[0].GetPromptTokens() != 10 {
		t.Fatalf("after %s unacked: %v, want k-1", UsageResend, due)
	}
	if due := a.dueUsage(now.Add(UsageResend + time.Second)); len(due) != 0 {
		t.Fatalf("sent again a second after the resend: %v", due)
	}
	a.usageAcked("k-1")
	if due := a.dueUsage(now.Add(3 * UsageResend)); len(due) != 0 {
		t.Fatalf("acked and still sent: %v", due)
	}
}
