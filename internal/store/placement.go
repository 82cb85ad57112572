package store

import "context"

// AccountHubs lists the connected, unrevoked hubs enrolled to account, least
// loaded first; a hub whose bridge has stopped beating is not connected.
// Placement chooses among these alone: another account's hub never sees a
// run's prompts.
func (s *Store) AccountHubs(ctx context.Context, account string) ([]Hub, error) {
	return queryAll(ctx, s, scanHub, `SELECT `+hubColumns+` FROM hubs h JOIN devices d ON d.id = h.device_id
		WHERE d.account = $1 AND `+hubLiveSQL+` AND d.revoked_at IS NULL
		ORDER BY h.gpu_load, h.cpu_load, h.device_id`, account)
}
