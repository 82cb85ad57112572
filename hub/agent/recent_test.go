package agent

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/wire"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// signal is the pre-warm signal the agent sends for a hot reading, as the
// heartbeat loop builds it.
func signal(a *Agent) *meshv1.PrewarmSignal {
	p := &Prewarm{}
	sig := p.Observe(reading(95, 60), time.Now())
	a.namePrewarm(sig)
	return sig
}

func TestPrewarmNamesTheRecentEscalationsAdapters(t *testing.T) {
	a := New(Options{})
	if sig := signal(a); sig.GetLora() != "" || len(sig.GetLoras()) != 0 {
		t.Fatalf("no escalation yet, but the signal names %q %v", sig.GetLora(), sig.GetLoras())
	}
	for _, l := range []string{"lora-a", "lora-b", "", "lora-a", "lora-c", "lora-d"} {
		if _, _, err := a.Escalate(&meshv1.EscalationRequest{Prompt: "q", Lora: l}); err != nil {
			t.Fatal(err)
		}
	}
	sig := signal(a)
	if want := []string{"lora-d", "lora-c", "lora-a"}; sig.GetLora() != "lora-d" || !slices.Equal(sig.GetLoras(), want) {
		t.Fatalf("signal names %q %v, want lora-d first of %v (most recent first, each once, %d of them)",
			sig.GetLora(), sig.GetLoras(), want, DefaultPrewarmRecent)
	}
	if err := wire.ValidateHub(&meshv1.HubMessage{Body: &meshv1.HubMessage_Prewarm{Prewarm: sig}}); err != nil {
		t.Fatalf("the bridge would refuse the signal: %v", err)
	}
}

func TestPrewarmFallsBackToTheConfiguredAdapter(t *testing.T) {
	a := New(Options{Prewarm: Prewarm{LoRA: "lora-project"}})
	if sig := signal(a); sig.GetLora() != "lora-project" || !slices.Equal(sig.GetLoras(), []string{"lora-project"}) {
		t.Fatalf("signal names %q %v, want the configured lora-project", sig.GetLora(), sig.GetLoras())
	}
	if _, _, err := a.Escalate(&meshv1.EscalationRequest{Prompt: "q", Lora: "lora-used"}); err != nil {
		t.Fatal(err)
	}
	if sig := signal(a); !slices.Equal(sig.GetLoras(), []string{"lora-used"}) {
		t.Fatalf("after an escalation with lora-used the signal names %v", sig.GetLoras())
	}
}

func TestPrewarmRecentIsBoundedByTheWire(t *testing.T) {
	a := New(Options{Prewarm: Prewarm{Recent: 100}})
	for i := range 3 * wire.MaxPrewarmLoRAs {
		if _, _, err := a.Escalate(&meshv1.EscalationRequest{Prompt: "q", Lora: fmt.Sprintf("lora-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	sig := signal(a)
	if len(sig.GetLoras()) != wire.MaxPrewarmLoRAs || sig.GetLora() != fmt.Sprintf("lora-%d", 3*wire.MaxPrewarmLoRAs-1) {
		t.Fatalf("signal names %d adapters, first %q", len(sig.GetLoras()), sig.GetLora())
	}
	if err := wire.ValidateHub(&meshv1.HubMessage{Body: &meshv1.HubMessage_Prewarm{Prewarm: sig}}); err != nil {
		t.Fatalf("the bridge would refuse the signal: %v", err)
	}
}

// TestPrewarmRemembersTheOutboxsAdapters: escalations a restart finds in
// the outbox count as recent, the newest first.
func TestPrewarmRemembersTheOutboxsAdapters(t *testing.T) {
	path := filepath.Join(t.TempDir(), OutboxFile)
	o, err := OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	a := New(Options{Outbox: o})
	for _, l := range []string{"lora-old", "lora-new"} {
		if _, _, err := a.Escalate(&meshv1.EscalationRequest{Prompt: "q", Lora: l}); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o, err = OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })
	if got := New(Options{Outbox: o}).RecentLoRAs(); !slices.Equal(got, []string{"lora-new", "lora-old"}) {
		t.Fatalf("after a restart the hub remembers %v", got)
	}
}
