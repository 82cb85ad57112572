package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// EnrollALPN is the protocol a new hub speaks to the bridge to enroll: TLS
// with the bridge's certificate only (the hub has none yet), one request,
// one answer. It can do nothing else.
const EnrollALPN = "si-enroll/1"

// enrollTokenVersion starts a hub's enrollment token.
const enrollTokenVersion = "si1"

// MaxEnrollSecret bounds the secret part of an enrollment token.
const MaxEnrollSecret = 128

// EnrollToken is what the operator hands a new hub: the one-time secret the
// store keeps hashed, and the SHA-256 of the mesh CA's certificate, so that
// the hub trusts on first contact only a bridge whose certificate that CA
// signed, and shows its secret to no other.
type EnrollToken struct {
	Secret string
	CA     [sha256.Size]byte
}

// String is the token as printed: si1.<secret>.<CA certificate's SHA-256, hex>.
func (t EnrollToken) String() string {
	return enrollTokenVersion + "." + t.Secret + "." + hex.EncodeToString(t.CA[:])
}

// ParseEnrollToken reads a token String wrote. The secret's characters are
// those of base64url and '_'; its length is bounded.
func ParseEnrollToken(s string) (EnrollToken, error) {
	s = strings.TrimSpace(s)
	const want = "want si1.<secret>.<CA SHA-256>, as si device enroll --token-only prints it"
	if len(s) > len(enrollTokenVersion)+2+MaxEnrollSecret+2*sha256.Size {
		return EnrollToken{}, fmt.Errorf("enrollment token of %d characters is too long: %s", len(s), want)
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] != enrollTokenVersion {
		return EnrollToken{}, errors.New("not an enrollment token: " + want)
	}
	if err := ValidEnrollSecret(parts[1]); err != nil {
		return EnrollToken{}, err
	}
	var t EnrollToken
	t.Secret = parts[1]
	if len(parts[2]) != 2*sha256.Size {
		return EnrollToken{}, errors.New("the enrollment token's CA hash is not 64 hex digits: " + want)
	}
	if _, err := hex.Decode(t.CA[:], []byte(parts[2])); err != nil {
		return EnrollToken{}, errors.New("the enrollment token's CA hash is not hex: " + want)
	}
	return t, nil
}

// ValidEnrollSecret checks the secret part of an enrollment token.
func ValidEnrollSecret(s string) error {
	if s == "" || len(s) > MaxEnrollSecret {
		return fmt.Errorf("enrollment secret must be 1 to %d characters", MaxEnrollSecret)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return errors.New("enrollment secret has a character other than letters, digits, '_' and '-'")
		}
	}
	return nil
}

// CAFingerprint is the SHA-256 of the DER of the CA certificate in caPEM
// (the first certificate), as `openssl x509 -fingerprint -sha256` shows it.
func CAFingerprint(caPEM []byte) ([sha256.Size]byte, error) {
	blk, _ := pem.Decode(caPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return [sha256.Size]byte{}, errors.New("mesh CA certificate is not PEM")
	}
	if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("mesh CA certificate: %w", err)
	}
	return sha256.Sum256(blk.Bytes), nil
}

// ErrCAMismatch is a bridge whose chain holds no CA with the token's hash.
var ErrCAMismatch = errors.New("the bridge's CA is not the one this token names: check --bridge, or ask the operator for a token from this mesh's CA")

// VerifyPinnedServer checks a bridge's chain, as the hub sees it on first
// contact: one of the certificates it sent is a CA whose SHA-256 is ca, and
// the leaf is a server certificate for serverName that this CA signed.
func VerifyPinnedServer(rawCerts [][]byte, ca [sha256.Size]byte, serverName string) error {
	if len(rawCerts) == 0 || len(rawCerts) > 4 {
		return errors.New("the bridge sent no certificate chain, or one too long")
	}
	var root *x509.Certificate
	for _, raw := range rawCerts[1:] {
		if sha256.Sum256(raw) == ca {
			c, err := x509.ParseCertificate(raw)
			if err != nil {
				return fmt.Errorf("the bridge's CA certificate: %w", err)
			}
			root = c
		}
	}
	if root == nil || !root.IsCA {
		return ErrCAMismatch
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return fmt.Errorf("the bridge's certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: serverName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("the bridge's certificate does not verify against the token's CA: %w", err)
	}
	return nil
}
