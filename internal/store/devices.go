package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrRevoked is returned for a revoked device or certificate.
var ErrRevoked = errors.New("revoked")

// ErrCertRefused wraps every answer of CheckCert that refuses the
// certificate (unregistered, another account's, revoked), as opposed to a
// failure to ask (the database down), which refuses nothing.
var ErrCertRefused = errors.New("certificate refused")

// RegisterCert records a certificate issued to a device, creating the device
// on first enrollment. A device id belongs to one account for good.
func (s *Store) RegisterCert(ctx context.Context, deviceID, account, serial string, notAfter time.Time) error {
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		return registerCert(ctx, tx, deviceID, account, serial, notAfter)
	})
}

func registerCert(ctx context.Context, tx pgx.Tx, deviceID, account, serial string, notAfter time.Time) error {
	var owner string
	var revoked *time.Time
	err := tx.QueryRow(ctx, `INSERT INTO devices (id, account) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET id = excluded.id RETURNING account, revoked_at`, deviceID, account).Scan(&owner, &revoked)
	if err != nil {
		return err
	}
	if owner != account {
		return fmt.Errorf("device %s is enrolled to account %s, not %s", deviceID, owner, account)
	}
	if revoked != nil {
		return fmt.Errorf("device %s was revoked on %s: enroll it under a new id", deviceID, revoked.Format(time.RFC3339))
	}
	_, err = tx.Exec(ctx, `INSERT INTO device_certs (serial, device_id, not_after) VALUES ($1, $2, $3)`, serial, deviceID, notAfter)
	return err
}

// DeviceAccount returns the account a device is enrolled to.
func (s *Store) DeviceAccount(ctx context.Context, deviceID string) (string, error) {
	var account string
	err := s.Pool.QueryRow(ctx, `SELECT account FROM devices WHERE id = $1`, deviceID).Scan(&account)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return account, err
}

// RevokeDevice revokes a device and every certificate it holds.
func (s *Store) RevokeDevice(ctx context.Context, deviceID string) error {
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE devices SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1`, deviceID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		_, err = tx.Exec(ctx, `UPDATE device_certs SET revoked_at = coalesce(revoked_at, now()) WHERE device_id = $1`, deviceID)
		return err
	})
}

// CheckCert says whether a certificate may connect: it must be registered to
// this device and account, and neither it nor the device may be revoked.
func (s *Store) CheckCert(ctx context.Context, deviceID, account, serial string) error {
	var owner string
	var devRevoked, certRevoked *time.Time
	err := s.Pool.QueryRow(ctx, `
		SELECT d.account, d.revoked_at, c.revoked_at FROM device_certs c JOIN devices d ON d.id = c.device_id
		WHERE c.serial = $1 AND c.device_id = $2`, serial, deviceID).Scan(&owner, &devRevoked, &certRevoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("certificate %s of device %s is not registered: %w", serial, deviceID, ErrCertRefused)
	}
	if err != nil {
		return err
	}
	if owner != account {
		return fmt.Errorf("device %s belongs to another account: %w", deviceID, ErrCertRefused)
	}
	if devRevoked != nil || certRevoked != nil {
		return fmt.Errorf("device %s: %w (%w)", deviceID, ErrRevoked, ErrCertRefused)
	}
	return nil
}
