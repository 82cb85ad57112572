package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnrollTokenPrefix starts every enrollment token, so one pasted in the
// wrong place is recognised.
const EnrollTokenPrefix = "si_enroll_"

// EnrollRefusedError is an enrollment token that cannot be redeemed:
// unknown, used, expired, or issued for another device.
type EnrollRefusedError struct{ Reason string }

func (e *EnrollRefusedError) Error() string { return "enrollment refused: " + e.Reason }

// CreateEnrollmentToken issues a one-time token that enrolls deviceID into
// account until ttl passes by the database's clock (the one redemption
// reads). Only its SHA-256 is stored.
func (s *Store) CreateEnrollmentToken(ctx context.Context, account, deviceID string, ttl time.Duration) (token string, expires time.Time, err error) {
	if ttl <= 0 {
		return "", time.Time{}, errors.New("an enrollment token needs a positive lifetime")
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", time.Time{}, err
	}
	token = EnrollTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(token))
	err = s.Pool.QueryRow(ctx, `INSERT INTO enrollment_tokens (hash, account, device_id, expires_at)
		VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at`, sum[:], account, deviceID, ttl.Seconds()).Scan(&expires)
	return token, expires, err
}

// EnrollTokenHash is what the store keeps of an enrollment token, and what
// a bridge passes on instead of the token (workflow inputs never hold one).
func EnrollTokenHash(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// EnrollIssue is the certificate an enrollment issued: its serial, end and
// PEM, kept on the token so a repeat of the same redemption returns it.
type EnrollIssue struct {
	Serial   string
	NotAfter time.Time
	CertPEM  []byte
}

// RedeemEnrollmentToken spends token for deviceID and the key whose
// pki.PublicKeySum is keySum and, in the same transaction, registers the
// certificate issue makes for the token's account: a failure anywhere
// leaves the token unspent. A token is spent once: asked again with the
// same device and key (an answer lost on its way to the hub), it returns
// the certificate it issued then, without calling issue; with another key
// it is refused.
func (s *Store) RedeemEnrollmentToken(ctx context.Context, token, deviceID string, keySum []byte, issue func(account string) (EnrollIssue, error)) (account string, certPEM []byte, err error) {
	return s.RedeemEnrollmentTokenHash(ctx, EnrollTokenHash(token), deviceID, keySum, issue)
}

// RedeemEnrollmentTokenHash is RedeemEnrollmentToken given the token's
// EnrollTokenHash.
func (s *Store) RedeemEnrollmentTokenHash(ctx context.Context, hash []byte, deviceID string, keySum []byte, issue func(account string) (EnrollIssue, error)) (account string, certPEM []byte, err error) {
	if len(hash) != sha256.Size {
		return "", nil, &EnrollRefusedError{"unknown token: ask the operator for one (si device enroll --token-only)"}
	}
	if len(keySum) != sha256.Size {
		return "", nil, errors.New("redeeming an enrollment token needs the SHA-256 of the key it certifies")
	}
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		row, err := scanEnrollToken(tx.QueryRow(ctx, enrollTokenQuery+` FOR UPDATE`, hash))
		repeat, err := row.refusal(err, deviceID, keySum)
		if err != nil {
			return err
		}
		account = row.account
		if repeat {
			if err := stillValid(ctx, tx, row.serial); err != nil {
				return err
			}
			certPEM = []byte(*row.certPEM)
			return nil
		}
		is, err := issue(account)
		if err != nil {
			return err
		}
		if err := registerCert(ctx, tx, deviceID, account, is.Serial, is.NotAfter); err != nil {
			return &EnrollRefusedError{err.Error()}
		}
		certPEM = is.CertPEM
		_, err = tx.Exec(ctx, `UPDATE enrollment_tokens SET used_at = now(), serial = $2, cert_pem = $3, key_sha256 = $4 WHERE hash = $1`,
			hash, is.Serial, string(is.CertPEM), keySum)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	return account, certPEM, nil
}

// CheckEnrollmentToken says whether the token whose EnrollTokenHash is hash
// would enroll deviceID with the key whose pki.PublicKeySum is keySum now,
// without spending it: a bridge asks before it troubles the CA role, so
// that a flood of bad tokens never reaches it.
func (s *Store) CheckEnrollmentToken(ctx context.Context, hash []byte, deviceID string, keySum []byte) error {
	if len(hash) != sha256.Size {
		return &EnrollRefusedError{"unknown token: ask the operator for one (si device enroll --token-only)"}
	}
	row, err := scanEnrollToken(s.Pool.QueryRow(ctx, enrollTokenQuery, hash))
	repeat, err := row.refusal(err, deviceID, keySum)
	if err == nil && repeat {
		err = stillValid(ctx, s.Pool, row.serial)
	}
	return err
}

// enrollTokenQuery reads a token row; whether it is still live is the
// database's clock's answer, the one revocation (expires_at = now()) used.
const enrollTokenQuery = `SELECT account, device_id, expires_at, expires_at > now(), used_at, cert_pem, key_sha256, serial
	FROM enrollment_tokens WHERE hash = $1`

// stillValid refuses to return again the certificate a token issued once
// it was revoked (the device, or this certificate after a renewal) or
// expired: the hub asking again would hold a certificate no bridge takes.
func stillValid(ctx context.Context, tx interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, serial *string) error {
	if serial == nil {
		return &EnrollRefusedError{"the token's certificate is not on record: ask the operator for a new token"}
	}
	var revoked *time.Time
	var notAfter time.Time
	var live bool
	err := tx.QueryRow(ctx, `SELECT coalesce(d.revoked_at, c.revoked_at), c.not_after, c.not_after > now()
		FROM device_certs c JOIN devices d ON d.id = c.device_id WHERE c.serial = $1`, *serial).Scan(&revoked, &notAfter, &live)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return &EnrollRefusedError{"the token's certificate is not on record: ask the operator for a new token"}
	case err != nil:
		return err
	case revoked != nil:
		return &EnrollRefusedError{fmt.Sprintf("the certificate this token issued was revoked on %s: ask the operator for a new token", revoked.UTC().Format(time.RFC3339))}
	case !live:
		return &EnrollRefusedError{fmt.Sprintf("the certificate this token issued expired on %s: ask the operator for a new token", notAfter.UTC().Format(time.RFC3339))}
	}
	return nil
}

type enrollTokenRow struct {
	serial       *string
	account, dev string
	expires      time.Time
	live         bool
	used         *time.Time
	certPEM      *string
	keySum       []byte
}

func scanEnrollToken(r pgx.Row) (enrollTokenRow, error) {
	var t enrollTokenRow
	err := r.Scan(&t.account, &t.dev, &t.expires, &t.live, &t.used, &t.certPEM, &t.keySum, &t.serial)
	return t, err
}

// refusal is why a token row (or its absence, err) cannot enroll deviceID
// with the key keySum; repeat is a token already redeemed for that device
// and key, whose certificate is to be returned again.
func (t enrollTokenRow) refusal(err error, deviceID string, keySum []byte) (repeat bool, _ error) {
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, &EnrollRefusedError{"unknown token: ask the operator for one (si device enroll --token-only)"}
	case err != nil:
		return false, err
	case t.used != nil && t.dev == deviceID && t.certPEM != nil && len(keySum) == sha256.Size && subtle.ConstantTimeCompare(t.keySum, keySum) == 1:
		return true, nil
	case t.used != nil:
		return false, &EnrollRefusedError{fmt.Sprintf("the token was used on %s: ask the operator for a new one", t.used.UTC().Format(time.RFC3339))}
	case !t.live:
		return false, &EnrollRefusedError{fmt.Sprintf("the token expired on %s: ask the operator for a new one", t.expires.UTC().Format(time.RFC3339))}
	case t.dev != deviceID:
		return false, &EnrollRefusedError{fmt.Sprintf("the token enrolls device %s, not %s", t.dev, deviceID)}
	}
	return false, nil
}

// RevokeEnrollmentTokens ends now every unused enrollment token for
// deviceID, and returns how many it ended.
func (s *Store) RevokeEnrollmentTokens(ctx context.Context, deviceID string) (int64, error) {
	tag, err := s.Pool.Exec(ctx, `UPDATE enrollment_tokens SET expires_at = now()
		WHERE device_id = $1 AND used_at IS NULL AND expires_at > now()`, deviceID)
	return tag.RowsAffected(), err
}
