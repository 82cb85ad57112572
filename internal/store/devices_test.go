package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// The bridge drops a connection only for a refusal; a registry it cannot
// reach must not read as one, or a database blip disconnects every hub.
func TestCheckCertTellsRefusalFromFailure(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "acme")
	harness.EnsureAccount(t, s, "globex")
	dev := harness.UniqueID("gpu")
	if err := s.RegisterCert(ctx, dev, "acme", "serial-1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckCert(ctx, dev, "acme", "serial-1"); err != nil {
		t.Fatalf("a registered certificate: %v", err)
	}
	for name, err := range map[string]error{
		"unregistered serial": s.CheckCert(ctx, dev, "acme", "serial-2"),
		"another account":     s.CheckCert(ctx, dev, "globex", "serial-1"),
	} {
		if !errors.Is(err, store.ErrCertRefused) {
			t.Errorf("%s: %v is not a refusal", name, err)
		}
	}
	if err := s.RevokeDevice(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckCert(ctx, dev, "acme", "serial-1"); !errors.Is(err, store.ErrCertRefused) || !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("a revoked device: %v", err)
	}

	pool, err := pgxpool.New(ctx, harness.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	down := &store.Store{Pool: pool}
	if err := down.CheckCert(ctx, dev, "acme", "serial-1"); err == nil || errors.Is(err, store.ErrCertRefused) {
		t.Fatalf("an unreachable registry answered %v; want an error that is not a refusal", err)
	}
}
