package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// TestAPITokensListAndRevoke: an account's tokens are listed without their
// values; a revoked token, named by its id or by itself, no longer
// authenticates and the browser sessions opened with it end; another
// account can revoke neither by id nor by the token's value.
func TestAPITokensListAndRevoke(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "tok-alice")
	harness.EnsureAccount(t, s, "tok-mallory")
	first, err := s.CreateAPIToken(ctx, "tok-alice", "laptop")
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.CreateAPIToken(ctx, "tok-alice", "ci")
	if err != nil {
		t.Fatal(err)
	}
	_, session, err := s.CreateBrowserSession(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if a, id, err := s.AccountForBrowserSession(ctx, session); err != nil || a != "tok-alice" || id != store.TokenID(first) {
		t.Fatalf("the browser session's account and token: %q %q, %v; want tok-alice %q", a, id, err, store.TokenID(first))
	}

	ts, err := s.APITokens(ctx, "tok-alice")
	if err != nil || len(ts) != 2 || ts[0].Name != "laptop" || ts[1].Name != "ci" || ts[0].RevokedAt != nil {
		t.Fatalf("tokens %+v, %v", ts, err)
	}
	for _, tk := range ts {
		if len(tk.ID) != 12 || strings.Contains(first, tk.ID) || strings.Contains(second, tk.ID) {
			t.Errorf("token id %q: want 12 hex digits of the hash, not of the token", tk.ID)
		}
	}
	if ts, err := s.APITokens(ctx, "tok-mallory"); err != nil || len(ts) != 0 {
		t.Errorf("an account with no token: %+v, %v", ts, err)
	}
	if _, err := s.APITokens(ctx, "tok-nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unknown account's tokens: %v, want ErrNotFound", err)
	}

	// The other account, by id and by the token itself.
	if _, err := s.RevokeAPIToken(ctx, "tok-mallory", ts[0].ID); !errors.Is(err, store.ErrTokenNotFound) {
		t.Errorf("another account revoking by id: %v", err)
	}
	if _, err := s.RevokeAPIToken(ctx, "tok-mallory", first); !errors.Is(err, store.ErrTokenNotFound) {
		t.Errorf("another account revoking by the token: %v", err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("z", 12), ts[0].ID + "0", "' OR true --"} {
		if _, err := s.RevokeAPIToken(ctx, "tok-alice", bad); !errors.Is(err, store.ErrBadTokenID) {
			t.Errorf("revoking %q: %v, want ErrBadTokenID", bad, err)
		}
	}
	if _, err := s.RevokeAPIToken(ctx, "tok-alice", "si_"+strings.Repeat("x", 120)); !errors.Is(err, store.ErrTokenNotFound) {
		t.Errorf("revoking an overlong token: %v, want ErrTokenNotFound", err)
	}
	if a, err := s.AccountForToken(ctx, first); err != nil || a != "tok-alice" {
		t.Fatalf("after the refused revocations the token is %q, %v", a, err)
	}

	got, err := s.RevokeAPIToken(ctx, "tok-alice", strings.ToUpper(ts[0].ID))
	if err != nil || got.ID != ts[0].ID || got.Name != "laptop" || got.RevokedAt == nil {
		t.Fatalf("revoke by id: %+v, %v", got, err)
	}
	if _, err := s.AccountForToken(ctx, first); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a revoked token still authenticates: %v", err)
	}
	if a, err := s.TokenAccount(ctx, first); err != nil || a != "tok-alice" {
		t.Errorf("a revoked token's account: %q, %v", a, err)
	}
	if _, err := s.TokenAccount(ctx, "si_"+strings.Repeat("q", 40)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the account of a token never issued: %v", err)
	}
	if _, _, err := s.AccountForBrowserSession(ctx, session); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a revoked token's browser session lives on: %v", err)
	}
	if _, _, err := s.CreateBrowserSession(ctx, first); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a revoked token opened a browser session: %v", err)
	}
	again, err := s.RevokeAPIToken(ctx, "tok-alice", ts[0].ID)
	if err != nil || !again.RevokedAt.Equal(*got.RevokedAt) {
		t.Errorf("revoking again: %+v, %v; want the first revocation's time %v", again, err, got.RevokedAt)
	}
	if a, err := s.AccountForToken(ctx, second); err != nil || a != "tok-alice" {
		t.Errorf("the other token: %q, %v", a, err)
	}

	if got, err := s.RevokeAPIToken(ctx, "tok-alice", second); err != nil || got.ID != ts[1].ID {
		t.Fatalf("revoke by the token: %+v, %v", got, err)
	}
	if _, err := s.AccountForToken(ctx, second); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a token revoked by itself still authenticates: %v", err)
	}
	ts, err = s.APITokens(ctx, "tok-alice")
	if err != nil || len(ts) != 2 || ts[0].RevokedAt == nil || ts[1].RevokedAt == nil {
		t.Errorf("after both revocations: %+v, %v", ts, err)
	}
}

// TestAnAmbiguousTokenIDRevokesNothing: an id that names two of an
// account's tokens (hashes sharing their first 48 bits) revokes neither;
// the token itself still revokes its own.
func TestAnAmbiguousTokenIDRevokesNothing(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "tok-twins")
	tok, err := s.CreateAPIToken(ctx, "tok-twins", "real")
	if err != nil {
		t.Fatal(err)
	}
	id := store.TokenID(tok)
	// A second row whose hash shares the real one's first 6 bytes.
	if _, err := s.Pool.Exec(ctx, `INSERT INTO api_tokens (hash, account_id, name)
		SELECT overlay(hash placing decode(repeat('ff', 26), 'hex') from 7), account_id, 'twin'
		FROM api_tokens WHERE account_id = 'tok-twins'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeAPIToken(ctx, "tok-twins", id); !errors.Is(err, store.ErrAmbiguousTokenID) {
		t.Fatalf("revoking an ambiguous id: %v, want ErrAmbiguousTokenID", err)
	}
	ts, err := s.APITokens(ctx, "tok-twins")
	if err != nil || len(ts) != 2 || ts[0].ID != id || ts[1].ID != id || ts[0].RevokedAt != nil || ts[1].RevokedAt != nil {
		t.Fatalf("after the ambiguous revocation: %+v, %v; want both live under %s", ts, err, id)
	}
	if got, err := s.RevokeAPIToken(ctx, "tok-twins", tok); err != nil || got.Name != "real" {
		t.Fatalf("revoking by the token: %+v, %v", got, err)
	}
	if _, err := s.AccountForToken(ctx, tok); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the token revoked by itself still authenticates: %v", err)
	}
}
