package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"time"
)

// MaxCSRBytes bounds a certificate request a hub may send: a P-256 or
// Ed25519 request is a few hundred bytes.
const MaxCSRBytes = 4096

// NewDeviceKey makes a device's private key. It is made where it is used
// (on the hub) and never sent anywhere.
func NewDeviceKey() (crypto.Signer, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCSR is a certificate request for key. It names nothing the CA reads:
// the identity of a renewed certificate comes from the certificate the
// request was sent under, never from the request.
func NewCSR(key crypto.Signer) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "si hub"}}, key)
}

// PublicKeySum is the SHA-256 of pub's PKIX encoding: what the registry
// keeps of the key an enrollment token was redeemed for. Nil for a key
// that has no PKIX encoding.
func PublicKeySum(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(der)
	return sum[:]
}

// ParseCSR reads a hub's certificate request: at most MaxCSRBytes of DER,
// signed by its own key (proof the sender holds it), and that key a P-256
// ECDSA or Ed25519 key.
func ParseCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 || len(der) > MaxCSRBytes {
		return nil, fmt.Errorf("certificate request of %d bytes: it must be 1 to %d", len(der), MaxCSRBytes)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request is not signed by its key: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("certificate request key: ECDSA keys must be P-256")
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("certificate request key %T: use a P-256 ECDSA or Ed25519 key", csr.PublicKey)
	}
	return csr, nil
}

// SignDeviceCSR issues a device certificate for id over the key of a
// request ParseCSR accepted; the result carries no key (the hub has it).
func (ca *CA) SignDeviceCSR(csrDER []byte, id Identity, ttl time.Duration, now time.Time) (Issued, error) {
	csr, err := ParseCSR(csrDER)
	if err != nil {
		return Issued{}, err
	}
	is, err := ca.IssueDevice(id, publicOnly{csr.PublicKey}, ttl, now)
	if err != nil {
		return Issued{}, err
	}
	is.KeyPEM = nil
	return is, nil
}

// publicOnly lets issue take a public key: it is only ever asked for Public.
type publicOnly struct{ pub crypto.PublicKey }

func (p publicOnly) Public() crypto.PublicKey { return p.pub }
func (publicOnly) Sign(_ io.Reader, _ []byte, _ crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("pki: a certificate request's key cannot sign here")
}

// KeyPEM is a private key as the hub stores it (PKCS #8, PEM).
func KeyPEM(k crypto.Signer) ([]byte, error) { return keyToPEM(k) }
