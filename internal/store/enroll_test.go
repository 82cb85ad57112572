package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

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
	if err := s.CheckEnrollmentToken(ctx, h, "gpu-check"); err != nil {
		t.Fatalf("a fresh token: %v", err)
	}
	var re *store.EnrollRefusedError
	if err := s.CheckEnrollmentToken(ctx, h, "gpu-other"); !errors.As(err, &re) || !strings.Contains(err.Error(), "enrolls device gpu-check") {
		t.Fatalf("another device: %v", err)
	}
	for _, bad := range [][]byte{nil, h[:31], append(h, 0)} {
		if err := s.CheckEnrollmentToken(ctx, bad, "gpu-check"); !errors.As(err, &re) {
			t.Fatalf("a %d-byte hash: %v", len(bad), err)
		}
	}
	if n, err := s.RevokeEnrollmentTokens(ctx, "gpu-check"); err != nil || n != 1 {
		t.Fatalf("revoked %d: %v", n, err)
	}
	if err := s.CheckEnrollmentToken(ctx, h, "gpu-check"); !errors.As(err, &re) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("a revoked token checks: %v", err)
	}
	issued := false
	_, err = s.RedeemEnrollmentTokenHash(ctx, h, "gpu-check", func(string) (string, time.Time, error) {
		issued = true
		return "s1", time.Now().Add(time.Hour), nil
	})
	if !errors.As(err, &re) || issued {
		t.Fatalf("a revoked token redeemed (issued %v): %v", issued, err)
	}
}
