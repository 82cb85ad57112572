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
	var reg certRow
	err := s.Pool.QueryRow(ctx, `
		SELECT d.account, d.revoked_at IS NOT NULL, c.revoked_at IS NOT NULL FROM device_certs c JOIN devices d ON d.id = c.device_id
		WHERE c.serial = $1 AND c.device_id = $2`, serial, deviceID).Scan(&reg.owner, &reg.deviceRevoked, &reg.certRevoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return CertRef{DeviceID: deviceID, Account: account, Serial: serial}.verdict(nil)
	}
	if err != nil {
		return err
	}
	return CertRef{DeviceID: deviceID, Account: account, Serial: serial}.verdict(&reg)
}

// CertRef names a certificate a hub presented: its device, its account and
// its serial.
type CertRef struct{ DeviceID, Account, Serial string }

// certRow is what the registry holds of a certificate.
type certRow struct {
	owner                      string
	deviceRevoked, certRevoked bool
}

// verdict is CheckCert's answer for r given its registry row (nil: none).
func (r CertRef) verdict(reg *certRow) error {
	switch {
	case reg == nil:
		return fmt.Errorf("certificate %s of device %s is not registered: %w", r.Serial, r.DeviceID, ErrCertRefused)
	case reg.owner != r.Account:
		return fmt.Errorf("device %s belongs to another account: %w", r.DeviceID, ErrCertRefused)
	case reg.deviceRevoked || reg.certRevoked:
		return fmt.Errorf("device %s: %w (%w)", r.DeviceID, ErrRevoked, ErrCertRefused)
	}
	return nil
}

// CheckCerts answers CheckCert for many certificates in one query (the
// bridge's re-check of every connected hub): refused holds each refused
// certificate with CheckCert's error for it; err is the registry's own
// failure (the database unreachable), which refuses none of them.
func (s *Store) CheckCerts(ctx context.Context, refs []CertRef) (refused map[CertRef]error, err error) {
	ids, serials := make([]string, len(refs)), make([]string, len(refs))
	for i, r := range refs {
		ids[i], serials[i] = r.DeviceID, r.Serial
	}
	rows, err := s.Pool.Query(ctx, `
		SELECT c.device_id, c.serial, d.account, d.revoked_at IS NOT NULL, c.revoked_at IS NOT NULL
		FROM unnest($1::text[], $2::text[]) AS r(device_id, serial)
		JOIN device_certs c ON c.serial = r.serial AND c.device_id = r.device_id
		JOIN devices d ON d.id = c.device_id`, ids, serials)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	type key struct{ device, serial string }
	found := map[key]certRow{}
	for rows.Next() {
		var k key
		var reg certRow
		if err := rows.Scan(&k.device, &k.serial, &reg.owner, &reg.deviceRevoked, &reg.certRevoked); err != nil {
			return nil, err
		}
		found[k] = reg
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	refused = map[CertRef]error{}
	for _, r := range refs {
		var v error
		if reg, ok := found[key{r.DeviceID, r.Serial}]; ok {
			v = r.verdict(&reg)
		} else {
			v = r.verdict(nil)
		}
		if v != nil {
			refused[r] = v
		}
	}
	return refused, nil
}
