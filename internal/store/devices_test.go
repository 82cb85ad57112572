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

// CheckCerts is the bridge's re-check of every connected hub in one query:
// among many good certificates, each one an attacker could present (another
// device's serial, another account, a revoked certificate or device, an
// unregistered one) gets CheckCert's own refusal, and only those.
func TestCheckCertsAnswersAsCheckCert(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "acme")
	harness.EnsureAccount(t, s, "globex")
	var refs []store.CertRef
	for range 50 {
		dev := harness.UniqueID("gpu")
		serial := harness.UniqueID("serial")
		if err := s.RegisterCert(ctx, dev, "acme", serial, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, store.CertRef{DeviceID: dev, Account: "acme", Serial: serial})
	}
	a, b, c := refs[0], refs[1], refs[2]
	if err := s.RevokeCert(ctx, b.DeviceID, b.Serial); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeDevice(ctx, c.DeviceID); err != nil {
		t.Fatal(err)
	}
	bad := map[string]store.CertRef{
		"another device's serial": {DeviceID: refs[3].DeviceID, Account: "acme", Serial: a.Serial},
		"another account":         {DeviceID: a.DeviceID, Account: "globex", Serial: a.Serial},
		"revoked certificate":     b,
		"revoked device":          c,
		"unregistered serial":     {DeviceID: a.DeviceID, Account: "acme", Serial: "never-issued"},
	}
	all := append([]store.CertRef(nil), refs...)
	for _, r := range bad {
		all = append(all, r)
	}
	refused, err := s.CheckCerts(ctx, all)
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range bad {
		want := s.CheckCert(ctx, r.DeviceID, r.Account, r.Serial)
		got := refused[r]
		if !errors.Is(got, store.ErrCertRefused) || got.Error() != want.Error() {
			t.Errorf("%s: CheckCerts %v, CheckCert %v", name, got, want)
		}
	}
	for _, r := range refs[3:] {
		if err := refused[r]; err != nil {
			t.Errorf("a good certificate refused: %v", err)
		}
	}
	if len(refused) != len(bad) {
		t.Errorf("%d refused, want %d", len(refused), len(bad))
	}

	pool, err := pgxpool.New(ctx, harness.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	down := &store.Store{Pool: pool}
	if refused, err := down.CheckCerts(ctx, refs); err == nil || len(refused) != 0 {
		t.Fatalf("an unreachable registry answered %v, %d refused; want an error and no refusal", err, len(refused))
	}
}
