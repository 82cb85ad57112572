package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// TestOutboxKeepsWorkAcrossAKill queues an escalation and usage records in
// an agent that never reaches a bridge, then drops the agent without any
// shutdown (as SIGKILL would: only what is on disk survives) and starts a
// new one on the same file: it holds the same work under the same ids.
func TestOutboxKeepsWorkAcrossAKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub", OutboxFile)
	ob, err := OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	a := New(Options{Bridge: "127.0.0.1:1", Outbox: ob})
	if _, _, err := a.Escalate(&meshv1.EscalationRequest{RequestId: "r1", Prompt: "q", MaxRounds: 2}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"u1", "u2", "u2", "u3"} { // u2 twice: kept once
		if err := a.RecordUsage(&meshv1.UsageRecord{EventId: id, Model: "m", PromptTokens: 7}); err != nil {
			t.Fatal(err)
		}
	}
	// A second process on the same outbox would send the same queue twice.
	if _, err := OpenOutbox(path); err == nil || !strings.Contains(err.Error(), "in use by another si hub") {
		t.Fatalf("a second opener: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("outbox file mode: %v %v", fi.Mode(), err)
	}
	// The kill: the agent's memory is gone; the file is all that is left.
	_ = ob.db.Close()
	ob.unlock()

	ob2, err := OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ob2.Close()
	b := New(Options{Bridge: "127.0.0.1:1", Outbox: ob2})
	st := b.Status()
	if st.Queued != 1 || st.QueuedUsage != 3 || st.OldestQueued.IsZero() || time.Since(st.OldestQueued) > time.Minute {
		t.Fatalf("after the restart: %+v, want 1 escalation and 3 usage records", st)
	}
	if e := b.pending["r1"]; e == nil || e.req.GetPrompt() != "q" || e.req.GetMaxRounds() != 2 {
		t.Fatalf("escalation after the restart: %+v", e)
	}
	if strings.Join(b.usageOrd, ",") != "u1,u2,u3" {
		t.Fatalf("usage after the restart: %v", b.usageOrd)
	}
	// Acked and answered work leaves the file.
	b.usageAcked("u2")
	b.finish(b.pending["r1"], &meshv1.EscalationResponse{RequestId: "r1", Body: &meshv1.EscalationResponse_Result{Result: &meshv1.EscalationResult{Status: "consensus"}}})
	var n int
	if err := ob2.db.QueryRow(`SELECT count(*) FROM outbox`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("entries left %d (%v), want 2", n, err)
	}
}

// TestEscalateAttachesToTheRequestInFlight: the same request id again is
// the same request (si escalate asking again after a hub restart): it sees
// every response so far and the result, and nothing is queued twice.
func TestEscalateAttachesToTheRequestInFlight(t *testing.T) {
	a := New(Options{})
	_, first, err := a.Escalate(&meshv1.EscalationRequest{RequestId: "r", Prompt: "q"})
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	e := a.pending["r"]
	e.relay(&meshv1.EscalationResponse{Body: &meshv1.EscalationResponse_Progress{Progress: &meshv1.EscalationProgress{Step: 1, Agent: "pathos"}}}, false)
	a.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	_, gone, err := a.EscalateContext(ctx, &meshv1.EscalationRequest{RequestId: "r", Prompt: "q"})
	if err != nil {
		t.Fatal(err)
	}
	cancel() // a caller that leaves stops only its own stream
	_, second, err := a.Escalate(&meshv1.EscalationRequest{RequestId: "r", Prompt: "q"})
	if err != nil {
		t.Fatalf("the same id again: %v", err)
	}
	if st := a.Status(); st.Queued != 1 {
		t.Fatalf("queued %d, want 1", st.Queued)
	}
	a.finish(e, &meshv1.EscalationResponse{Body: &meshv1.EscalationResponse_Result{Result: &meshv1.EscalationResult{Status: "consensus"}}})
	for name, ch := range map[string]<-chan *meshv1.EscalationResponse{"first": first, "second": second} {
		var got []string
		for r := range ch {
			got = append(got, r.GetProgress().GetAgent()+r.GetResult().GetStatus())
		}
		if strings.Join(got, ",") != "pathos,consensus" {
			t.Errorf("%s caller saw %v", name, got)
		}
	}
	for range gone {
	}
}

// TestOutboxSkipsDamagedEntries: an entry that does not decode (a damaged
// file, or one edited by hand) is neither sent nor fatal.
func TestOutboxSkipsDamagedEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), OutboxFile)
	ob, err := OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.put(kindUsage, "good", &meshv1.UsageRecord{EventId: "good", Model: "m"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	huge, _ := proto.Marshal(&meshv1.EscalationRequest{RequestId: "big", Prompt: strings.Repeat("x", 70<<10)})
	other, _ := proto.Marshal(&meshv1.UsageRecord{EventId: "someone-else", Model: "m"})
	for _, row := range []struct {
		kind, id string
		body     []byte
	}{
		{kindUsage, "garbage", []byte{0xff, 0xff, 0xff}},
		{kindEscalation, "big", huge},
		{kindUsage, "renamed", other},
		{"unknown", "x", other},
	} {
		if _, err := ob.db.Exec(`INSERT INTO outbox (kind, id, body, queued_unix_nano) VALUES (?, ?, ?, 0)`, row.kind, row.id, row.body); err != nil {
			t.Fatal(err)
		}
	}
	_ = ob.Close()
	ob, err = OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	if ob.Skipped != 4 || len(ob.usage) != 1 || ob.usage[0].rec.GetEventId() != "good" || len(ob.escalations) != 0 {
		t.Fatalf("skipped %d, usage %v, escalations %v", ob.Skipped, ob.usage, ob.escalations)
	}
}

func TestOutboxRefusesANonDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), OutboxFile)
	if err := os.WriteFile(path, bytes.Repeat([]byte("not sqlite "), 100), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenOutbox(path); err == nil || !strings.Contains(err.Error(), "move the file aside") {
		t.Fatalf("a file that is not an outbox: %v", err)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	esc, _ := proto.Marshal(&meshv1.EscalationRequest{RequestId: "r", Prompt: "q", Threshold: 0.5})
	use, _ := proto.Marshal(&meshv1.UsageRecord{EventId: "u", Model: "m", PromptTokens: 3})
	f.Add(kindEscalation, "r", esc)
	f.Add(kindUsage, "u", use)
	f.Add(kindUsage, "r", esc)
	f.Add("", "", []byte{})
	f.Fuzz(func(t *testing.T, kind, id string, body []byte) {
		m, err := decodeEntry(kind, id, body)
		if err != nil {
			return
		}
		// What decodes is bounded, valid and stored under its own id.
		switch r := m.(type) {
		case *meshv1.EscalationRequest:
			if r.GetRequestId() != id || len(r.GetPrompt()) > 64<<10 {
				t.Fatalf("escalation %q under %q", r.GetRequestId(), id)
			}
		case *meshv1.UsageRecord:
			if r.GetEventId() != id {
				t.Fatalf("usage %q under %q", r.GetEventId(), id)
			}
		default:
			t.Fatalf("decoded %T", m)
		}
	})
}

// testOutboxMax stands for MaxOutboxEntries where a test fills the outbox
// (100,000 rows take minutes under -race with the pure-Go SQLite).
const testOutboxMax = 2000

// TestOutboxQuarantinesDamagedEntries: a crafted file holding
// as many usage rows as the bound that do not decode does not make the hub
// refuse new work: they move to the quarantine table at open and no
// longer count, and open loads no more than testOutboxMax of a kind.
func TestOutboxQuarantinesDamagedEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), OutboxFile)
	ob, err := openOutbox(path, testOutboxMax)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := ob.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range testOutboxMax {
		if _, err := tx.Exec(`INSERT INTO outbox (kind, id, body, queued_unix_nano) VALUES (?, ?, ?, 0)`,
			kindUsage, fmt.Sprintf("bad-%d", i), []byte{0xff, 0xff, 0xff}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	_ = ob.Close()

	ob, err = openOutbox(path, testOutboxMax)
	if err != nil {
		t.Fatal(err)
	}
	if ob.Skipped != testOutboxMax || len(ob.usage) != 0 {
		t.Fatalf("skipped %d, loaded %d", ob.Skipped, len(ob.usage))
	}
	if err := ob.put(kindUsage, "new", &meshv1.UsageRecord{EventId: "new", Model: "m"}, time.Now()); err != nil {
		t.Fatalf("new work behind %d damaged rows: %v", testOutboxMax, err)
	}
	var q int
	if err := ob.db.QueryRow(`SELECT count(*) FROM outbox_quarantine`).Scan(&q); err != nil || q != testOutboxMax {
		t.Fatalf("quarantined %d: %v", q, err)
	}
	_ = ob.Close()

	// A second open finds only the valid row and quarantines nothing more.
	ob, err = openOutbox(path, testOutboxMax)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	if ob.Skipped != 0 || len(ob.usage) != 1 {
		t.Fatalf("after quarantine: skipped %d, loaded %d", ob.Skipped, len(ob.usage))
	}
}

// TestOutboxLoadsAtMostTheBound: a file holding more valid rows of a kind
// than the bound loads only that many at open.
func TestOutboxLoadsAtMostTheBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), OutboxFile)
	ob, err := openOutbox(path, testOutboxMax)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := ob.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range testOutboxMax + 10 {
		id := fmt.Sprintf("u-%d", i)
		body, _ := proto.Marshal(&meshv1.UsageRecord{EventId: id, Model: "m"})
		if _, err := tx.Exec(`INSERT INTO outbox (kind, id, body, queued_unix_nano) VALUES (?, ?, ?, 0)`, kindUsage, id, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	_ = ob.Close()
	ob, err = openOutbox(path, testOutboxMax)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	if len(ob.usage) != testOutboxMax {
		t.Fatalf("loaded %d usage records, want at most %d", len(ob.usage), testOutboxMax)
	}
}
