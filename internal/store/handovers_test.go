package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

func handover(t *testing.T, s *store.Store, id, project string, expires time.Time) store.Handover {
	t.Helper()
	h, err := s.CreateHandover(context.Background(), store.Handover{ID: id, Project: project, Host: "host",
		Recipient: "ada@example.com", ExpiresAt: expires})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHandoverRules(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "host")
	harness.EnsureAccount(t, s, "editor")
	if _, err := s.ClaimProject(ctx, "atlas", "host"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMember(ctx, "atlas", "editor", store.RoleEditor); err != nil {
		t.Fatal(err)
	}
	// Only the owner hands over; a bad address is refused.
	if _, err := s.CreateHandover(ctx, store.Handover{ID: "x", Project: "atlas", Host: "editor", Recipient: "a@b.c",
		ExpiresAt: time.Now().Add(time.Hour)}); !errors.Is(err, store.ErrForbidden) {
		t.Fatalf("an editor hands over: %v", err)
	}
	for _, bad := range []string{"not an address", "Ada <ada@example.com>", "ada@example.com\r\nBcc: eve@example.com"} {
		if _, err := s.CreateHandover(ctx, store.Handover{ID: "x", Project: "atlas", Host: "host", Recipient: bad,
			ExpiresAt: time.Now().Add(time.Hour)}); err == nil || !strings.Contains(err.Error(), "invalid email") {
			t.Fatalf("recipient %q: %v", bad, err)
		}
	}
	h := handover(t, s, "ho1", "atlas", time.Now().Add(time.Hour))
	// One open handover per project.
	if _, err := s.CreateHandover(ctx, store.Handover{ID: "ho2", Project: "atlas", Host: "host", Recipient: "b@example.com",
		ExpiresAt: time.Now().Add(time.Hour)}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("a second open handover: %v", err)
	}
	// Tokens: only hashes are kept; a wrong one finds nothing.
	th := sha256.Sum256([]byte("si_ho_secret"))
	if err := s.AddHandoverToken(ctx, h.ID, th[:]); err != nil {
		t.Fatal(err)
	}
	if got, err := s.HandoverByTokenHash(ctx, th[:]); err != nil || got.ID != h.ID {
		t.Fatalf("by token: %+v, %v", got, err)
	}
	wrong := sha256.Sum256([]byte("si_ho_guess"))
	if _, err := s.HandoverByTokenHash(ctx, wrong[:]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("wrong token: %v", err)
	}
	// The host cannot accept; the recipient's new account is created with
	// the recipient's address; a retry by the same account is fine, another
	// account is refused.
	var he *store.HandoverError
	if _, err := s.AcceptHandover(ctx, h.ID, store.HandoverAcceptance{Account: "host"}, time.Now()); !errors.As(err, &he) {
		t.Fatalf("host accepts: %v", err)
	}
	ada := store.HandoverAcceptance{Account: "ada", NewAccount: true, Request: "r1"}
	if got, err := s.AcceptHandover(ctx, h.ID, ada, time.Now()); err != nil || got.State != store.HandoverAccepted || got.NewOwner != "ada" {
		t.Fatalf("accept: %+v, %v", got, err)
	}
	if a, err := s.AccountByID(ctx, "ada"); err != nil || a.Email != "ada@example.com" {
		t.Fatalf("new account %+v, %v", a, err)
	}
	if _, err := s.AcceptHandover(ctx, h.ID, ada, time.Now()); err != nil {
		t.Fatalf("retried accept: %v", err)
	}
	// Another request naming the same account (a second holder of the
	// link) is not a retry: it is refused.
	again := ada
	again.Request = "r2"
	if _, err := s.AcceptHandover(ctx, h.ID, again, time.Now()); !errors.As(err, &he) || !strings.Contains(he.Reason, "already been accepted") {
		t.Fatalf("a second request for the same account: %v", err)
	}
	if _, err := s.AcceptHandover(ctx, h.ID, store.HandoverAcceptance{Account: "eve", NewAccount: true, Request: "r3"}, time.Now()); !errors.As(err, &he) || !strings.Contains(he.Reason, "already been accepted") {
		t.Fatalf("second account accepts: %v", err)
	}
	// An accepted handover cannot be declined; it completes.
	if changed, err := s.CloseHandover(ctx, h.ID, store.HandoverDeclined, ""); err != nil || changed {
		t.Fatalf("decline after accept: %v, %v", changed, err)
	}
	if changed, err := s.CloseHandover(ctx, h.ID, store.HandoverCompleted, ""); err != nil || !changed {
		t.Fatalf("complete: %v, %v", changed, err)
	}
	// Expired: the deadline passes before the accept.
	if _, err := s.ClaimProject(ctx, "borealis", "host"); err != nil {
		t.Fatal(err)
	}
	h2 := handover(t, s, "ho3", "borealis", time.Now().Add(-time.Second))
	if _, err := s.AcceptHandover(ctx, h2.ID, store.HandoverAcceptance{Account: "ada"}, time.Now()); !errors.As(err, &he) || !strings.Contains(he.Reason, "expired") {
		t.Fatalf("accept after expiry: %v", err)
	}
	if changed, _ := s.CloseHandover(ctx, h2.ID, store.HandoverExpired, ""); !changed {
		t.Fatal("expire did not close")
	}
	// The project can be handed over again once the last one closed.
	handover(t, s, "ho4", "borealis", time.Now().Add(time.Hour))
	if changed, _ := s.CloseHandover(ctx, "ho4", store.HandoverDeclined, ""); !changed {
		t.Fatal("decline did not close")
	}
	c, err := s.Conversion(ctx, "host")
	if err != nil {
		t.Fatal(err)
	}
	if c.HandoversStarted != 3 || c.HandoversAccepted != 1 || c.HandoversExpired != 1 || c.HandoversDeclined != 1 {
		t.Fatalf("conversion %+v", c)
	}
	if r := c.HandoverAcceptRate(); r < 0.333 || r > 0.334 {
		t.Fatalf("handover accept rate %v, want 1/3", r)
	}
}

// Holding a handover's link names no one: an existing account takes the
// project only if its email is the one the handover was sent to, and a new
// account is made only for an email no account has.
func TestHandoverAcceptOnlyByTheRecipient(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "host")
	if _, err := s.CreateAccount(ctx, "victim", "victim@example.com"); err != nil {
		t.Fatal(err)
	}
	harness.EnsureAccount(t, s, "noemail")
	if _, err := s.ClaimProject(ctx, "atlas", "host"); err != nil {
		t.Fatal(err)
	}
	h := handover(t, s, "ho1", "atlas", time.Now().Add(time.Hour))
	var he *store.HandoverError
	for name, a := range map[string]store.HandoverAcceptance{
		"another account's name":           {Account: "victim", Request: "r1"},
		"another account's name as new":    {Account: "victim", NewAccount: true, Request: "r2"},
		"an account without an email":      {Account: "noemail", Request: "r3"},
		"an account that does not exist":   {Account: "nobody", Request: "r4"},
		"the host's own name, as existing": {Account: "host", Request: "r5"},
	} {
		if _, err := s.AcceptHandover(ctx, h.ID, a, time.Now()); !errors.As(err, &he) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if got, _ := s.HandoverByID(ctx, h.ID); got.State != store.HandoverPending || got.NewOwner != "" {
		t.Fatalf("after refused accepts: %+v", got)
	}
	// The recipient's own account (its email in another case) takes it.
	if _, err := s.CreateAccount(ctx, "ada", "Ada@Example.com"); err != nil {
		t.Fatal(err)
	}
	// With an account for the email, no second one is made for it.
	if _, err := s.AcceptHandover(ctx, h.ID, store.HandoverAcceptance{Account: "ada2", NewAccount: true, Request: "r6"}, time.Now()); !errors.As(err, &he) ||
		!strings.Contains(he.Reason, "sign in") {
		t.Fatalf("a new account for a taken email: %v", err)
	}
	if got, err := s.AcceptHandover(ctx, h.ID, store.HandoverAcceptance{Account: "ada", Request: "r7"}, time.Now()); err != nil || got.NewOwner != "ada" {
		t.Fatalf("the recipient's account: %+v, %v", got, err)
	}
}
