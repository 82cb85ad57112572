package activities

import (
	"context"
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/store"
)

// ErrRenewRefused is the error type of a renewal the CA will not sign: a
// malformed request, or a certificate that is revoked or not registered.
const ErrRenewRefused = "RenewRefused"

// CA signs device certificates. Only the process that runs the CA role
// holds it: bridges and nodes ask it, over Temporal, and never see its key.
type CA struct {
	CA    *pki.CA
	Store *store.Store
	// TTL of the certificates it signs. Default pki.DefaultDeviceTTL.
	TTL time.Duration
}

// RenewCertInput is a renewal a bridge relays: the identity and serial of
// the certificate the hub's connection was verified with, and the hub's
// certificate request for its new key.
type RenewCertInput struct {
	DeviceID, Account, Serial string
	CSR                       []byte
}

// RenewCertResult is the new certificate, PEM-encoded.
type RenewCertResult struct {
	CertPEM []byte
	Serial  string
}

// RenewCert signs a new certificate for the identity of a certificate that
// still passes the registry's check, and registers it. The old serial stays
// valid until the bridge sees the new one in use.
func (a *CA) RenewCert(ctx context.Context, in RenewCertInput) (RenewCertResult, error) {
	if err := a.Store.CheckCert(ctx, in.DeviceID, in.Account, in.Serial); err != nil {
		if errors.Is(err, store.ErrCertRefused) {
			return RenewCertResult{}, temporal.NewNonRetryableApplicationError("renewal refused: "+err.Error(), ErrRenewRefused, err)
		}
		return RenewCertResult{}, err
	}
	ttl := a.TTL
	if ttl == 0 {
		ttl = pki.DefaultDeviceTTL
	}
	is, err := a.CA.SignDeviceCSR(in.CSR, pki.Identity{DeviceID: in.DeviceID, Account: in.Account}, ttl, time.Now())
	if err != nil {
		return RenewCertResult{}, temporal.NewNonRetryableApplicationError("renewal refused: "+err.Error(), ErrRenewRefused, err)
	}
	if err := a.Store.RegisterCert(ctx, in.DeviceID, in.Account, pki.Serial(is.Cert), is.Cert.NotAfter); err != nil {
		return RenewCertResult{}, err
	}
	return RenewCertResult{CertPEM: is.CertPEM, Serial: pki.Serial(is.Cert)}, nil
}

// RenewDevice is RenewCert for a bridge that runs in the CA role's own
// process (bridge.Renewer).
func (a *CA) RenewDevice(ctx context.Context, id pki.Identity, serial string, csrDER []byte) ([]byte, error) {
	r, err := a.RenewCert(ctx, RenewCertInput{DeviceID: id.DeviceID, Account: id.Account, Serial: serial, CSR: csrDER})
	return r.CertPEM, err
}

// CAQueue is the task queue only the CA role polls: the one place a
// certificate is signed.
const CAQueue = "ca"

// EnrollInput is a new hub's first request: the SHA-256 of its one-time
// token (store.EnrollTokenHash; a workflow input never holds the token
// itself), the device name it asks for and a certificate request for the
// key it made.
type EnrollInput struct {
	TokenHash []byte
	DeviceID  string
	CSR       []byte
}

// EnrollResult is the hub's first certificate and the CA's, PEM-encoded.
type EnrollResult struct {
	Account        string
	CertPEM, CAPEM []byte
}

// Enroll spends a one-time enrollment token for the device it names and
// signs the hub's first certificate, for the token's account.
func (a *CA) Enroll(ctx context.Context, in EnrollInput) (EnrollResult, error) {
	if err := pki.ValidID("device id", in.DeviceID); err != nil {
		return EnrollResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrRenewRefused, err)
	}
	csr, err := pki.ParseCSR(in.CSR)
	if err != nil {
		return EnrollResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrRenewRefused, err)
	}
	ttl := a.TTL
	if ttl == 0 {
		ttl = pki.DefaultDeviceTTL
	}
	// Redeemed before with this key (this activity retried after its
	// commit, or the hub's answer lost), the token returns the same
	// certificate and nothing is signed.
	account, certPEM, err := a.Store.RedeemEnrollmentTokenHash(ctx, in.TokenHash, in.DeviceID, pki.PublicKeySum(csr.PublicKey), func(account string) (store.EnrollIssue, error) {
		is, err := a.CA.SignDeviceCSR(in.CSR, pki.Identity{DeviceID: in.DeviceID, Account: account}, ttl, time.Now())
		if err != nil {
			return store.EnrollIssue{}, err
		}
		return store.EnrollIssue{Serial: pki.Serial(is.Cert), NotAfter: is.Cert.NotAfter, CertPEM: is.CertPEM}, nil
	})
	var re *store.EnrollRefusedError
	if errors.As(err, &re) {
		return EnrollResult{}, temporal.NewNonRetryableApplicationError(re.Error(), ErrRenewRefused, err)
	}
	if err != nil {
		return EnrollResult{}, err
	}
	return EnrollResult{Account: account, CertPEM: certPEM, CAPEM: a.CA.CertPEM}, nil
}
