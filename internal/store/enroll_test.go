package store_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// CheckEnrollmentToken answers as redemption would, without spending the
// token; a revoked token enrolls nothing; a hash of the wrong size is an
// unknown token, not a query error.
func TestEnrollmentTokenCheckAndRevoke(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	tok, _, err := s.CreateEnrollmentToken(ctx, "acme", "gpu-check", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	h := store.EnrollTokenHash(tok)
	key := bytes.Repeat([]byte{7}, 32)
	if err := s.CheckEnrollmentToken(ctx, h, "gpu-check", key); err != nil {
		t.Fatalf("a fresh token: %v", err)
	}
	var re *store.EnrollRefusedError
	if err := s.CheckEnrollmentToken(ctx, h, "gpu-other", key); !errors.As(err, &re) || !strings.Contains(err.Error(), "enrolls device gpu-check") {
		t.Fatalf("another device: %v", err)
	}
	for _, bad := range [][]byte{nil, h[:31], append(h, 0)} {
		if err := s.CheckEnrollmentToken(ctx, bad, "gpu-check", key); !errors.As(err, &re) {
			t.Fatalf("a %d-byte hash: %v", len(bad), err)
		}
	}
	if n, err := s.RevokeEnrollmentTokens(ctx, "gpu-check"); err != nil || n != 1 {
		t.Fatalf("revoked %d: %v", n, err)
	}
	if err := s.CheckEnrollmentToken(ctx, h, "gpu-check", key); !errors.As(err, &re) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("a revoked token checks: %v", err)
	}
	issued := false
	_, _, err = s.RedeemEnrollmentTokenHash(ctx, h, "gpu-check", key, func(string) (store.EnrollIssue, error) {
		issued = true
		return store.EnrollIssue{Serial: "s1", NotAfter: time.Now().Add(time.Hour), CertPEM: []byte("cert")}, nil
	})
	if !errors.As(err, &re) || issued {
		t.Fatalf("a revoked token redeemed (issued %v): %v", issued, err)
	}
}

// TestEnrollmentTokenExpiryIsTheDatabasesClock: revocation sets a token's
// expiry to the database's now(); a CA role whose clock is behind the
// database's must still see it expired. Here the database's clock, as the
// store's connections see it, runs an hour ahead of this process's.
func TestEnrollmentTokenExpiryIsTheDatabasesClock(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	if _, err := s.Pool.Exec(ctx, `CREATE SCHEMA skew;
		CREATE FUNCTION skew.now() RETURNS timestamptz LANGUAGE sql STABLE AS $$ SELECT pg_catalog.now() + interval '1 hour' $$`); err != nil {
		t.Fatal(err)
	}
	var path string
	if err := s.Pool.QueryRow(ctx, `SELECT current_setting('search_path')`).Scan(&path); err != nil {
		t.Fatal(err)
	}
	cfg := s.Pool.Config().Copy()
	cfg.ConnConfig.RuntimeParams["search_path"] = path + ", skew, pg_catalog"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ahead := &store.Store{Pool: pool}
	var dbNow time.Time
	if err := pool.QueryRow(ctx, `SELECT now()`).Scan(&dbNow); err != nil || time.Until(dbNow) < 50*time.Minute {
		t.Fatalf("the skewed clock reads %v: %v", dbNow, err)
	}
	tok, _, err := ahead.CreateEnrollmentToken(ctx, "acme", "gpu-skew", 10*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := ahead.RevokeEnrollmentTokens(ctx, "gpu-skew"); err != nil || n != 1 {
		t.Fatalf("revoked %d: %v", n, err)
	}
	key := bytes.Repeat([]byte{7}, 32)
	var re *store.EnrollRefusedError
	if err := ahead.CheckEnrollmentToken(ctx, store.EnrollTokenHash(tok), "gpu-skew", key); !errors.As(err, &re) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("a revoked token checks with the CA's clock behind the database's: %v", err)
	}
	issued := false
	_, _, err = ahead.RedeemEnrollmentTokenHash(ctx, store.EnrollTokenHash(tok), "gpu-skew", key, func(string) (store.EnrollIssue, error) {
		issued = true
		return store.EnrollIssue{Serial: "s-skew", NotAfter: time.Now().Add(time.Hour), CertPEM: []byte("cert")}, nil
	})
	if !errors.As(err, &re) || issued {
		t.Fatalf("a revoked token redeemed with the CA's clock behind the database's (issued %v): %v", issued, err)
	}
}
