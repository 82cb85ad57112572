package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

func invite(t *testing.T, s *store.Store, id, host string, quota money.Micros, expires time.Time) store.Invite {
	t.Helper()
	h := sha256.Sum256([]byte("token-" + id))
	i, err := s.CreateInvite(context.Background(), store.Invite{ID: id, TokenHash: h[:], Project: "shared", Host: host,
		Role: store.RoleViewer, Quota: quota, ExpiresAt: expires})
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// secretHash is the hash of a made-up guest session secret.
func secretHash(session string) []byte {
	h := sha256.Sum256([]byte(store.GuestSecretPrefix + session))
	return h[:]
}

func TestGuestQuotaNeverOverspentUnderConcurrency(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "host")
	quota := money.Micros(20_000) // two cents
	invite(t, s, "inv1", "host", quota, time.Now().Add(time.Hour))
	g, err := s.AcceptInvite(ctx, "inv1", "gs1", secretHash("gs1"), time.Now())
	if err != nil || g.Remaining != quota || g.Host != "host" {
		t.Fatalf("accept = %+v, %v", g, err)
	}
	const workers, each = 12, 30
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		charged   money.Micros
		refused   int
		capped    int
		otherErrs []error
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				c, err := s.LogUsage(ctx, store.Usage{EventID: fmt.Sprintf("g-%d-%d", w, i), Account: "host", Project: "shared",
					GuestSession: "gs1", Model: "si-simulator-large", PromptTokens: 200, CompletionTokens: 40})
				var qe *store.GuestQuotaError
				mu.Lock()
				switch {
				case errors.As(err, &qe):
					refused++
				case err != nil:
					otherErrs = append(otherErrs, err)
				default:
					charged += c.Gross
					if c.GuestCapped {
						capped++
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(otherErrs) > 0 {
		t.Fatal(otherErrs[0])
	}
	g, _ = s.GuestSessionByID(ctx, "gs1")
	if charged != quota || g.Remaining != 0 {
		t.Fatalf("guest spent %d of a %d quota (remaining %d)", charged, quota, g.Remaining)
	}
	if refused == 0 || capped != 1 {
		t.Fatalf("refused %d, capped %d; want refusals once spent and exactly one capped call", refused, capped)
	}
	a, _ := s.AccountByID(ctx, "host")
	if a.Unbilled != quota {
		t.Fatalf("host owes %d, want exactly the quota %d", a.Unbilled, quota)
	}
	if b, err := s.Books(ctx, "host"); err != nil || !b.Balanced() {
		t.Fatalf("books %+v, %v", b, err)
	}
}

func TestGuestSessionBillsOnlyItsHost(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "host")
	harness.EnsureAccount(t, s, "other")
	invite(t, s, "inv1", "host", money.Dollar, time.Now().Add(time.Hour))
	if _, err := s.AcceptInvite(ctx, "inv1", "gs1", secretHash("gs1"), time.Now()); err != nil {
		t.Fatal(err)
	}
	_, err := s.LogUsage(ctx, store.Usage{EventID: "x", Account: "other", Project: "p", GuestSession: "gs1", Model: "m", PromptTokens: 1})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another account billing the session: %v", err)
	}
}

func TestInviteTokensOnce(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "host")
	now := time.Now()
	invite(t, s, "used", "host", money.Dollar, now.Add(time.Hour))
	invite(t, s, "revoked", "host", money.Dollar, now.Add(time.Hour))
	invite(t, s, "late", "host", money.Dollar, now.Add(time.Hour))

	if _, err := s.AcceptInvite(ctx, "used", "gs-a", secretHash("gs-a"), now); err != nil {
		t.Fatal(err)
	}
	if g, err := s.AcceptInvite(ctx, "used", "gs-a", secretHash("gs-a"), now); err != nil || g.ID != "gs-a" {
		t.Fatalf("a retried accept = %+v, %v", g, err)
	}
	if ok, err := s.CloseInvite(ctx, "revoked", store.InviteRevoked); !ok || err != nil {
		t.Fatalf("revoke = %v, %v", ok, err)
	}
	cases := map[string]struct {
		id      string
		at      time.Time
		message string
	}{
		"used":    {"used", now, "already been used"},
		"revoked": {"revoked", now, "revoked"},
		"expired": {"late", now.Add(2 * time.Hour), "expired"},
	}
	for name, c := range cases {
		_, err := s.AcceptInvite(ctx, c.id, "gs-"+name+"-2", secretHash("gs-"+name+"-2"), c.at)
		var ie *store.InviteError
		if !errors.As(err, &ie) || ie.Reason == "" || !strings.Contains(ie.Reason, c.message) {
			t.Errorf("%s: %v, want an InviteError about %q", name, err, c.message)
		}
	}
	if ok, _ := s.CloseInvite(ctx, "used", store.InviteExpired); ok {
		t.Fatal("an accepted invite was expired")
	}
	h := sha256.Sum256([]byte("token-used"))
	if i, err := s.InviteByTokenHash(ctx, h[:]); err != nil || i.ID != "used" {
		t.Fatalf("by token = %+v, %v", i, err)
	}
	wrong := sha256.Sum256([]byte("token-guess"))
	if _, err := s.InviteByTokenHash(ctx, wrong[:]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("wrong token: %v", err)
	}
}
