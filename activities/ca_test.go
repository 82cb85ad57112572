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
	otherKey, _ := pki.NewDeviceKey()
	otherCSR, _ := pki.NewCSR(otherKey)
	if _, err := a.Enroll(ctx, activities.EnrollInput{TokenHash: store.EnrollTokenHash(tok), DeviceID: "gpu-new", CSR: otherCSR}); err == nil || !strings.Contains(err.Error(), "was used") {
		t.Fatalf("a used token, another key: %v", err)
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

// TestEnrollRetryAfterLostAnswer: the CA signed and committed but its
// answer was lost (the activity is retried, or the hub asks again): the
// same token with the same key gets the same certificate back, and nothing
// new is signed; a second hub holding the token with another key is
// refused.
func TestEnrollRetryAfterLostAnswer(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	ca, err := pki.InitCA(t.TempDir(), false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := &activities.CA{CA: ca, Store: s, TTL: time.Hour}
	key, _ := pki.NewDeviceKey()
	csr, _ := pki.NewCSR(key)
	tok, _, err := s.CreateEnrollmentToken(ctx, "acme", "gpu-lost", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	in := activities.EnrollInput{TokenHash: store.EnrollTokenHash(tok), DeviceID: "gpu-lost", CSR: csr}
	first, err := a.Enroll(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	// The answer never reached the hub; it asks again with the same key
	// (a fresh CSR over it).
	csr2, _ := pki.NewCSR(key)
	again, err := a.Enroll(ctx, activities.EnrollInput{TokenHash: in.TokenHash, DeviceID: "gpu-lost", CSR: csr2})
	if err != nil {
		t.Fatalf("the retry after a lost answer: %v", err)
	}
	if string(again.CertPEM) != string(first.CertPEM) || again.Account != "acme" || len(again.CAPEM) == 0 {
		t.Fatal("the retry got another certificate than the one committed")
	}
	if err := s.CheckEnrollmentToken(ctx, in.TokenHash, "gpu-lost", pki.PublicKeySum(key.Public())); err != nil {
		t.Fatalf("the bridge's pre-check refuses the retry: %v", err)
	}
	other, _ := pki.NewDeviceKey()
	ocsr, _ := pki.NewCSR(other)
	if _, err := a.Enroll(ctx, activities.EnrollInput{TokenHash: in.TokenHash, DeviceID: "gpu-lost", CSR: ocsr}); err == nil || !strings.Contains(err.Error(), "was used") {
		t.Fatalf("a second hub with another key: %v", err)
	}
	if err := s.CheckEnrollmentToken(ctx, in.TokenHash, "gpu-lost", pki.PublicKeySum(other.Public())); err == nil || !strings.Contains(err.Error(), "was used") {
		t.Fatalf("the pre-check for another key: %v", err)
	}
	var n int
	if err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM device_certs WHERE device_id = 'gpu-lost'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d certificates registered for gpu-lost: %v", n, err)
	}
}
