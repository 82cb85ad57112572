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

// TestARepeatedRedemptionReturnsNoDeadCertificate is the auditor's test: a
// token's repeat (the hub's answer lost) returns the certificate it issued
// only while that certificate is one a bridge takes; once the device or the
// certificate is revoked, or the certificate expired, the repeat is refused
// and says why, instead of handing the hub a certificate no bridge accepts.
func TestARepeatedRedemptionReturnsNoDeadCertificate(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	key := bytes.Repeat([]byte{9}, 32)
	type redeemed struct {
		again  func() ([]byte, error) // the redemption asked again
		check  func() error           // the bridge's check before it
		serial string
	}
	redeem := func(device string, notAfter time.Time) redeemed {
		t.Helper()
		tok, _, err := s.CreateEnrollmentToken(ctx, "acme", device, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		r := redeemed{serial: "serial-" + device}
		r.again = func() ([]byte, error) {
			_, cert, err := s.RedeemEnrollmentToken(ctx, tok, device, key, func(string) (store.EnrollIssue, error) {
				return store.EnrollIssue{Serial: r.serial, NotAfter: notAfter, CertPEM: []byte("cert of " + device)}, nil
			})
			return cert, err
		}
		r.check = func() error { return s.CheckEnrollmentToken(ctx, store.EnrollTokenHash(tok), device, key) }
		if cert, err := r.again(); err != nil || string(cert) != "cert of "+device {
			t.Fatalf("%s: first redemption %q %v", device, cert, err)
		}
		if notAfter.After(time.Now()) {
			if cert, err := r.again(); err != nil || string(cert) != "cert of "+device || r.check() != nil {
				t.Fatalf("%s: a repeat while the certificate is good: %q %v (check %v)", device, cert, err, r.check())
			}
		}
		return r
	}
	var re *store.EnrollRefusedError
	refused := func(what string, r redeemed, want string) {
		t.Helper()
		if cert, err := r.again(); !errors.As(err, &re) || !strings.Contains(err.Error(), want) || cert != nil {
			t.Fatalf("%s: a repeat returned %q, %v; want it refused with %q", what, cert, err, want)
		}
		// The bridge's check, before it troubles the CA role, says the same.
		if err := r.check(); !errors.As(err, &re) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: the bridge's check: %v; want it refused with %q", what, err, want)
		}
	}

	r := redeem("gpu-rev-device", time.Now().Add(time.Hour))
	if err := s.RevokeDevice(ctx, "gpu-rev-device"); err != nil {
		t.Fatal(err)
	}
	refused("a revoked device", r, "was revoked on")

	r = redeem("gpu-rev-cert", time.Now().Add(time.Hour))
	if err := s.RevokeCert(ctx, "gpu-rev-cert", r.serial); err != nil {
		t.Fatal(err)
	}
	refused("a certificate revoked after its renewal", r, "was revoked on")

	refused("an expired certificate", redeem("gpu-expired", time.Now().Add(-time.Minute)), "expired on")
}
