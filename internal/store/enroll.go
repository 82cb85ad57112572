package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
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
// account until ttl passes. Only its SHA-256 is stored.
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
		VALUES ($1, $2, $3, $4) RETURNING expires_at`, sum[:], account, deviceID, time.Now().Add(ttl)).Scan(&expires)
	return token, expires, err
}

// EnrollTokenHash is what the store keeps of an enrollment token, and what
// a bridge passes on instead of the token (workflow inputs never hold one).
func EnrollTokenHash(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// RedeemEnrollmentToken spends token for deviceID and, in the same
// transaction, registers the certificate issue makes for the token's
// account: a failure anywhere leaves the token unspent, and a token is
// spent once.
func (s *Store) RedeemEnrollmentToken(ctx context.Context, token, deviceID string, issue func(account string) (serial string, notAfter time.Time, err error)) (account string, err error) {
	return s.RedeemEnrollmentTokenHash(ctx, EnrollTokenHash(token), deviceID, issue)
}

// RedeemEnrollmentTokenHash is RedeemEnrollmentToken given the token's
// EnrollTokenHash.
func (s *Store) RedeemEnrollmentTokenHash(ctx context.Context, hash []byte, deviceID string, issue func(account string) (serial string, notAfter time.Time, err error)) (account string, err error) {
	if len(hash) != sha256.Size {
		return "", &EnrollRefusedError{"unknown token: ask the operator for one (si device enroll --token-only)"}
	}
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var dev string
		var expires time.Time
		var used *time.Time
		err := tx.QueryRow(ctx, `SELECT account, device_id, expires_at, used_at FROM enrollment_tokens WHERE hash = $1 FOR UPDATE`, hash).
			Scan(&account, &dev, &expires, &used)
		if err := enrollRefusal(err, dev, deviceID, expires, used); err != nil {
			return err
		}
		serial, notAfter, err := issue(account)
		if err != nil {
			return err
		}
		if err := registerCert(ctx, tx, deviceID, account, serial, notAfter); err != nil {
			return &EnrollRefusedError{err.Error()}
		}
		_, err = tx.Exec(ctx, `UPDATE enrollment_tokens SET used_at = now(), serial = $2 WHERE hash = $1`, hash, serial)
		return err
	})
	return account, err
}

// CheckEnrollmentToken says whether the token whose EnrollTokenHash is hash
// would enroll deviceID now, without spending it: a bridge asks before it
// troubles the CA role, so that a flood of bad tokens never reaches it.
func (s *Store) CheckEnrollmentToken(ctx context.Context, hash []byte, deviceID string) error {
	if len(hash) != sha256.Size {
		return &EnrollRefusedError{"unknown token: ask the operator for one (si device enroll --token-only)"}
	}
	var dev string
	var expires time.Time
	var used *time.Time
	err := s.Pool.QueryRow(ctx, `SELECT device_id, expires_at, used_at FROM enrollment_tokens WHERE hash = $1`, hash).
		Scan(&dev, &expires, &used)
	return enrollRefusal(err, dev, deviceID, expires, used)
}

// enrollRefusal is why a token row (or its absence) cannot enroll deviceID.
func enrollRefusal(err error, dev, deviceID string, expires time.Time, used *time.Time) error {
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return &EnrollRefusedError{"unknown token: ask the operator for one (si device enroll --token-only)"}
	case err != nil:
		return err
	case used != nil:
		return &EnrollRefusedError{fmt.Sprintf("the token was used on %s: ask the operator for a new one", used.UTC().Format(time.RFC3339))}
	case time.Now().After(expires):
		return &EnrollRefusedError{fmt.Sprintf("the token expired on %s: ask the operator for a new one", expires.UTC().Format(time.RFC3339))}
	case dev != deviceID:
		return &EnrollRefusedError{fmt.Sprintf("the token enrolls device %s, not %s", dev, deviceID)}
	}
	return nil
}

// RevokeEnrollmentTokens ends now every unused enrollment token for
// deviceID, and returns how many it ended.
func (s *Store) RevokeEnrollmentTokens(ctx context.Context, deviceID string) (int64, error) {
	tag, err := s.Pool.Exec(ctx, `UPDATE enrollment_tokens SET expires_at = now()
		WHERE device_id = $1 AND used_at IS NULL AND expires_at > now()`, deviceID)
	return tag.RowsAffected(), err
}
