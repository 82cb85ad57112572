package store

import (
	"context"
	"fmt"
)

// RevokeCert revokes one certificate of a device (the one a renewal
// replaced), leaving the device and its other certificates as they are.
func (s *Store) RevokeCert(ctx context.Context, deviceID, serial string) error {
	tag, err := s.Pool.Exec(ctx, `UPDATE device_certs SET revoked_at = coalesce(revoked_at, now()) WHERE serial = $1 AND device_id = $2`, serial, deviceID)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("certificate %s of device %s: %w", serial, deviceID, ErrNotFound)
	}
	return nil
}
