package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
)

// TestHubUsageCountsAgainstReservedHeadroom is the auditor's burst: two
// runs hold almost all of an account's headroom, the account's hub then
// reports usage it served on its own, and the runs settle. The first hub
// record that eats into the reserved headroom suspends the account at once
// (no new run is admitted), every hub record is billed (it ran), and the
// account ends over its ceiling by no more than the README's bound: the hub
// records logged from the one that exhausted the headroom on.
func TestHubUsageCountsAgainstReservedHeadroom(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	const account = "hub-burst"
	harness.EnsureAccount(t, m.Store, account)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ceiling := money.Dollar
	if err := m.Store.SetCeiling(ctx, account, ceiling); err != nil {
		t.Fatal(err)
	}
	// Two runs reserve 90 of the 100 cents of headroom.
	for _, h := range []string{"run-a", "run-b"} {
		if _, err := m.Store.ReserveHold(ctx, store.HoldRequest{ID: h, Account: account, Target: 45 * money.Cent, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-burst", Account: account}, time.Hour)
	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: c})
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	// Each record: 100,000 prompt tokens of si-simulator-large, 25 cents of
	// cost basis, 25.75 cents at the managed tier's 1.03.
	record := func(i int) {
		t.Helper()
		if err := a.RecordUsage(&meshv1.UsageRecord{EventId: fmt.Sprintf("burst-%d", i), Project: "p", Model: "si-simulator-large",
			PromptTokens: 100_000, AtUnixNano: time.Now().UnixNano()}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the record acked", func() bool { return a.Status().QueuedUsage == 0 })
	}
	const perRecord = 257_500
	record(0)
	acct, err := m.Store.AccountByID(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	if acct.Unbilled != perRecord || acct.Status != "suspended" || acct.SuspendedReason != "credit_ceiling" {
		t.Fatalf("after a hub record that ate the runs' reserved headroom: %+v; want it billed and the account suspended at the ceiling", acct)
	}
	var se *store.SuspendedError
	if _, err := m.Store.ReserveHold(ctx, store.HoldRequest{ID: "run-c", Account: account, Target: money.Cent, TTL: time.Hour}); !errors.As(err, &se) {
		t.Fatalf("a new run on an account whose headroom the hub spent: %v, want suspended", err)
	}
	// The hub goes on serving (its own GPUs); the mesh bills what it reports.
	for i := 1; i < 5; i++ {
		record(i)
	}
	// The runs settle within their holds: they were admitted and they ran.
	for i, h := range []string{"run-a", "run-b"} {
		if _, err := m.Store.LogUsage(ctx, store.Usage{EventID: fmt.Sprintf("%s/step", h), Account: account, Project: "p",
			Model: "si-simulator-large", PromptTokens: 170_000, Hold: h}); err != nil {
			t.Fatalf("run %d settling its hold: %v", i, err)
		}
	}
	var hubCharged money.Micros
	rows, err := m.Store.UsageSince(ctx, account, time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	hubEvents := 0
	for _, r := range rows {
		if strings.HasPrefix(r.Usage.EventID, "hub/gpu-burst/") {
			hubEvents++
			hubCharged += r.Charged
		}
	}
	if hubEvents != 5 || hubCharged != 5*perRecord {
		t.Fatalf("hub usage billed: %d events, %s; want all 5 records, %s (a record the hub served is never dropped)", hubEvents, hubCharged,
			money.Micros(5*perRecord))
	}
	acct, _ = m.Store.AccountByID(ctx, account)
	bk, _ := m.Store.Books(ctx, account)
	// The bound: the account's headroom was spent by the first record, so
	// every hub record counts; nothing the mesh admitted goes past.
	if over := acct.Unbilled - ceiling; over > hubCharged || !bk.Balanced() {
		t.Fatalf("unbilled %s, %s over the %s ceiling; the hub records after the headroom ran out came to %s; books %+v",
			acct.Unbilled, over, ceiling, hubCharged, bk)
	}
}

// A hub's record that brings its account to the flush threshold starts a
// flush of that account, as a consensus's usage does; one under it starts
// none, and another account's threshold is not this one's.
func TestHubUsageAtTheThresholdStartsAFlush(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	flushed := make(chan string, 8)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) {
		o.Flush = func(_ context.Context, account string) error { flushed <- account; return nil }
	})
	const account = "hub-flush"
	harness.EnsureAccount(t, m.Store, account)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// One record of 100,000 si-simulator-large prompt tokens bills 25.75
	// cents: the first stays under a 40-cent threshold, the second passes it.
	if _, err := m.Store.SetFlushThreshold(ctx, account, 40*money.Cent); err != nil {
		t.Fatal(err)
	}
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-flush", Account: account}, time.Hour)
	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: c})
	if err := a.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	record := func(i int) {
		t.Helper()
		if err := a.RecordUsage(&meshv1.UsageRecord{EventId: fmt.Sprintf("flush-%d", i), Project: "p", Model: "si-simulator-large",
			PromptTokens: 100_000, AtUnixNano: time.Now().UnixNano()}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the record acked", func() bool { return a.Status().QueuedUsage == 0 })
	}
	record(1)
	select {
	case got := <-flushed:
		t.Fatalf("a flush of %s started under the threshold", got)
	case <-time.After(200 * time.Millisecond):
	}
	record(2)
	select {
	case got := <-flushed:
		if got != account {
			t.Fatalf("flushed %s, want %s", got, account)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no flush started past the threshold")
	}
}
