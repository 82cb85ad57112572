package store_test

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// The funnel never goes down: revoking, declining, cancelling, expiring or
// failing after a step keeps that step counted. (The state counts it
// replaces lost an accepted handover that failed while copying.)
func TestFunnelNeverGoesDown(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "host")
	harness.EnsureAccount(t, s, "other")
	if _, err := s.CreateAccount(ctx, "ada", "ada@example.com"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"atlas", "borealis", "cygnus", "draco"} {
		if _, err := s.ClaimProject(ctx, p, "host"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ClaimProject(ctx, "elsewhere", "other"); err != nil {
		t.Fatal(err)
	}
	var last store.Funnel
	step := func(what string, want store.Funnel) {
		t.Helper()
		got, weeks, err := s.Funnels(ctx, "host", 0)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("after %s: funnel %+v, want %+v", what, got, want)
		}
		i, h, li, lh := got.Invites, got.Handovers, last.Invites, last.Handovers
		if i.Sent < li.Sent || i.Opened < li.Opened || i.Accepted < li.Accepted || i.FirstRun < li.FirstRun ||
			h.Started < lh.Started || h.Opened < lh.Opened || h.Accepted < lh.Accepted || h.FirstPaid < lh.FirstPaid {
			t.Fatalf("after %s the funnel went down: %+v, before %+v", what, got, last)
		}
		if len(weeks) != 1 || weeks[0].Funnel != got || weeks[0].Week.Weekday() != time.Monday {
			t.Fatalf("after %s: weeks %+v", what, weeks)
		}
		last = got
	}
	invite := func(id, project, host string) {
		t.Helper()
		h := sha256.Sum256([]byte(id))
		if _, err := s.CreateInvite(ctx, store.Invite{ID: id, TokenHash: h[:], Project: project, Host: host, Role: store.RoleEditor,
			Quota: 1_000_000, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	f := store.Funnel{}
	invite("inv1", "atlas", "host")
	invite("inv2", "atlas", "host")
	invite("inv3", "atlas", "host")
	invite("inv-other", "elsewhere", "other")
	f.Invites.Sent = 3
	step("three invites", f)
	if err := s.MarkInviteOpened(ctx, "inv1"); err != nil {
		t.Fatal(err)
	}
	_ = s.MarkInviteOpened(ctx, "inv1") // opened twice counts once
	_ = s.MarkInviteOpened(ctx, "inv2")
	_ = s.MarkInviteOpened(ctx, "inv-other")
	f.Invites.Opened = 2
	step("two opened", f)
	gh := sha256.Sum256([]byte("guest secret"))
	g, err := s.AcceptInvite(ctx, "inv1", "gs_1", gh[:], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Accepting an invite nobody opened (si join) opens it too.
	gh3 := sha256.Sum256([]byte("guest secret 3"))
	if _, err := s.AcceptInvite(ctx, "inv3", "gs_3", gh3[:], time.Now()); err != nil {
		t.Fatal(err)
	}
	f.Invites.Opened, f.Invites.Accepted = 3, 2
	step("two accepted", f)
	for i := range 2 {
		if _, err := s.LogUsage(ctx, store.Usage{EventID: "g" + string(rune('a'+i)), Account: "host", Project: "atlas", GuestSession: g.ID,
			Model: "si-simulator-small", PromptTokens: 100}); err != nil {
			t.Fatal(err)
		}
	}
	f.Invites.FirstRun = 1
	step("the guest's runs", f)
	if _, err := s.RevokeGuestSession(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.CloseInvite(ctx, "inv2", store.InviteRevoked); err != nil || !ok {
		t.Fatalf("revoke inv2: %v %v", ok, err)
	}
	// A write that tries to clear a step changes nothing.
	if _, err := s.Pool.Exec(ctx, `UPDATE invites SET opened_at = NULL, accepted_at = NULL, first_run_at = NULL`); err != nil {
		t.Fatal(err)
	}
	step("revoking the guest and an opened invite", f)

	h1 := handover(t, s, "ho1", "atlas", time.Now().Add(time.Hour))
	h2 := handover(t, s, "ho2", "borealis", time.Now().Add(time.Hour))
	h3 := handover(t, s, "ho3", "cygnus", time.Now().Add(time.Hour))
	handover(t, s, "ho4", "draco", time.Now().Add(time.Hour))
	f.Handovers.Started = 4
	step("four handovers", f)
	for _, id := range []string{h1.ID, h2.ID, "ho4"} {
		if err := s.MarkHandoverOpened(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	f.Handovers.Opened = 3
	step("three opened", f)
	if ok, _ := s.CloseHandover(ctx, h1.ID, store.HandoverDeclined, ""); !ok {
		t.Fatal("decline")
	}
	if ok, _ := s.CloseHandover(ctx, "ho4", store.HandoverCancelled, ""); !ok {
		t.Fatal("cancel")
	}
	step("a decline and a cancel", f)
	for _, h := range []store.Handover{h2, h3} { // h3 accepted from the CLI, never opened in a browser
		if _, err := s.AcceptHandover(ctx, h.ID, store.HandoverAcceptance{Account: "ada", Request: "r-" + h.ID}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	f.Handovers.Opened, f.Handovers.Accepted = 4, 2
	step("two accepted", f)
	if ok, _ := s.CloseHandover(ctx, h2.ID, store.HandoverFailed, "clone failed"); !ok {
		t.Fatal("fail")
	}
	if ok, _ := s.CloseHandover(ctx, h3.ID, store.HandoverCompleted, ""); !ok {
		t.Fatal("complete")
	}
	step("one failed, one completed", f)
	// The new owner's first paid invoice counts for the handover that gave
	// them the project, not the one that failed; a second changes nothing.
	if err := s.SetStripeCustomer(ctx, "ada", "cus_ada"); err != nil {
		t.Fatal(err)
	}
	for i, inv := range []string{"in_1", "in_2"} {
		if _, err := s.ApplyInvoiceEvent(ctx, store.InvoiceEvent{ID: "evt_" + inv, Type: store.InvoicePaid, Customer: "cus_ada", Invoice: inv,
			Created: time.Now().Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	f.Handovers.FirstPaid = 1
	step("the new owner paid", f)
	if _, err := s.Pool.Exec(ctx, `UPDATE handovers SET opened_at = NULL, accepted_at = NULL, first_paid_at = NULL`); err != nil {
		t.Fatal(err)
	}
	step("a write that tries to clear the steps", f)

	all, _, err := s.Funnels(ctx, "", 0)
	if err != nil || all.Invites.Sent != 4 || all.Invites.Opened != 4 {
		t.Fatalf("everyone's funnel: %+v %v", all, err)
	}
}

// Store.Ratio is no rate over zero items.
func TestRatio(t *testing.T) {
	if r := store.Ratio(0, 0); r != nil {
		t.Fatalf("0/0 = %v", *r)
	}
	if r := store.Ratio(1, 4); r == nil || *r != 0.25 {
		t.Fatalf("1/4 = %v", r)
	}
}

// A handover's first paid invoice is one the new owner paid after
// accepting it, while it waits for their payment method too: an invoice
// from before the handover does not count it as converted.
func TestFirstPaidIsAfterAcceptanceAndWhileAwaitingPayment(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "host")
	if _, err := s.CreateAccount(ctx, "ada", "ada@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStripeCustomer(ctx, "ada", "cus_ada"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimProject(ctx, "atlas", "host"); err != nil {
		t.Fatal(err)
	}
	h := handover(t, s, "ho1", "atlas", time.Now().Add(time.Hour))
	if _, err := s.AcceptHandover(ctx, h.ID, store.HandoverAcceptance{Account: "ada", Request: "r-ho1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	firstPaid := func() *time.Time {
		t.Helper()
		var at *time.Time
		if err := s.Pool.QueryRow(ctx, `SELECT first_paid_at FROM handovers WHERE id = $1`, h.ID).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	paid := func(invoice string, at time.Time) {
		t.Helper()
		if _, err := s.ApplyInvoiceEvent(ctx, store.InvoiceEvent{ID: "evt_" + invoice, Type: store.InvoicePaid, Customer: "cus_ada",
			Invoice: invoice, Created: at}); err != nil {
			t.Fatal(err)
		}
	}
	// Stripe delivers, late, an invoice ada paid a day before the handover.
	paid("in_before", time.Now().Add(-24*time.Hour))
	if at := firstPaid(); at != nil {
		t.Fatalf("an invoice paid before the handover was accepted counts as its first paid one (%v)", at)
	}
	if _, err := s.AwaitPayment(ctx, h.ID); err != nil {
		t.Fatal(err)
	}
	when := time.Now().Add(time.Minute).UTC().Truncate(time.Microsecond)
	paid("in_after", when)
	if at := firstPaid(); at == nil || !at.Equal(when) {
		t.Fatalf("the first invoice paid while the handover awaits payment: first_paid_at %v, want %v", at, when)
	}
}
