package activities_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// An enrollment token enrolls the device it names, into its account, once,
// before it expires; a used, expired, unknown or other device's token, or
// one for a device another account holds, enrolls nothing.
func TestEnrollWithToken(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	ca, err := pki.InitCA(t.TempDir(), false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := &activities.CA{CA: ca, Store: s, TTL: time.Hour}
	key, _ := pki.NewDeviceKey()
	csr, _ := pki.NewCSR(key)

	tok, _, err := s.CreateEnrollmentToken(ctx, "acme", "gpu-new", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Enroll(ctx, activities.EnrollInput{TokenHash: store.EnrollTokenHash(tok), DeviceID: "gpu-other", CSR: csr}); err == nil || !strings.Contains(err.Error(), "enrolls device gpu-new") {
		t.Fatalf("a token for another device: %v", err)
	}
	res, err := a.Enroll(ctx, activities.EnrollInput{TokenHash: store.EnrollTokenHash(tok), DeviceID: "gpu-new", CSR: csr})
	if err != nil {
		t.Fatalf("a good token (not spent by the refused try): %v", err)
	}
	cert, err := pkiParse(res.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := pki.IdentityOf(cert); id != (pki.Identity{DeviceID: "gpu-new", Account: "acme"}) || res.Account != "acme" {
		t.Fatalf("enrolled as %v", id)
	}
	if err := s.CheckCert(ctx, "gpu-new", "acme", pki.Serial(cert)); err != nil {
		t.Fatalf("the enrolled certificate does not pass: %v", err)
	}
	if _, err := a.Enroll(ctx, activities.EnrollInput{TokenHash: store.EnrollTokenHash(tok), DeviceID: "gpu-new", CSR: csr}); err == nil || !strings.Contains(err.Error(), "was used") {
		t.Fatalf("a used token: %v", err)
	}

	short, _, _ := s.CreateEnrollmentToken(ctx, "acme", "gpu-late", time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if _, err := a.Enroll(ctx, activities.EnrollInput{TokenHash: store.EnrollTokenHash(short), DeviceID: "gpu-late", CSR: csr}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired token: %v", err)
	}
	if _, err := a.Enroll(ctx, activities.EnrollInput{TokenHash: store.EnrollTokenHash("si_enroll_guess"), DeviceID: "gpu-new", CSR: csr}); err == nil || !strings.Contains(err.Error(), "unknown token") {
		t.Fatalf("an unknown token: %v", err)
	}
	// Another account's token cannot take over a device acme holds.
	theirs, _, _ := s.CreateEnrollmentToken(ctx, "evil", "gpu-new", time.Hour)
	if _, err := a.Enroll(ctx, activities.EnrollInput{TokenHash: store.EnrollTokenHash(theirs), DeviceID: "gpu-new", CSR: csr}); err == nil || !strings.Contains(err.Error(), "enrolled to account acme") {
		t.Fatalf("another account's token for an enrolled device: %v", err)
	}
	var used *time.Time
	if err := s.Pool.QueryRow(ctx, `SELECT used_at FROM enrollment_tokens WHERE account = 'evil'`).Scan(&used); err != nil || used != nil {
		t.Fatalf("a refused enrollment spent the token: %v %v", used, err)
	}
}

func pkiParse(certPEM []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}
