package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Bridge liveness. Every bridge process beats (BridgeBeat) every
// BridgeBeatEvery; a hub whose registry row names a bridge instance that
// has not beaten for BridgeStale, or that stopped, is offline for every
// reader at once (Hub.Connected, AccountHubs, PreferredHub), and a
// surviving bridge marks it disconnected (SweepDeadBridges). Ages are taken
// on the database's clock alone, so bridges' clocks need not agree.
const (
	BridgeBeatEvery = time.Second
	BridgeStale     = 4 * time.Second
	// bridgeForget is how long a dead bridge's row is kept.
	bridgeForget = time.Hour
)

// staleSQL is true for a bridge_beats row bb whose bridge is dead.
var staleSQL = fmt.Sprintf(`(bb.stopped OR bb.last_beat < now() - interval '%d milliseconds')`, BridgeStale.Milliseconds())

// ownRegistrationSQL is true when hub h's bridge_instance and features
// were written by its latest registration; false after a bridge that
// predates them registered it (a rolling upgrade), which sets only
// connected_at.
const ownRegistrationSQL = `(h.instance_at IS NOT DISTINCT FROM h.connected_at)`

// linkDeadSQL is true for a hub h the registry has connected through a
// bridge instance that is dead; false for a hub registered by a bridge
// that predates instances (its heartbeat age still applies).
var linkDeadSQL = `(h.connected AND ` + ownRegistrationSQL + ` AND coalesce((SELECT ` + staleSQL + ` FROM bridge_beats bb WHERE bb.instance = h.bridge_instance), false))`

// bridgeDeadSQL is true for a hub offline because its bridge died: still
// marked connected on a dead bridge, or marked disconnected for that by a
// survivor's sweep.
var bridgeDeadSQL = `((h.bridge_lost_at IS NOT NULL AND ` + ownRegistrationSQL + `) OR ` + linkDeadSQL + `)`

// hubLiveSQL is true for a hub connected through a live bridge.
var hubLiveSQL = `(h.connected AND NOT ` + linkDeadSQL + `)`

// BridgeBeat records that the bridge process instance (named name in the
// registry) is alive now. It reports whether the bridge had been counted
// dead before this beat (it had not beaten for BridgeStale: a stall, or the
// database out of its reach), when other bridges may have marked its hubs
// disconnected: ReclaimHubs takes back the ones still on it.
func (s *Store) BridgeBeat(ctx context.Context, instance, name string) (wasDead bool, err error) {
	err = s.Pool.QueryRow(ctx, `
		WITH prev AS (SELECT bb.stopped, bb.last_beat FROM bridge_beats bb WHERE bb.instance = $1)
		INSERT INTO bridge_beats AS bb (instance, name) VALUES ($1, $2)
		ON CONFLICT (instance) DO UPDATE SET last_beat = now(), stopped = false, name = excluded.name
		RETURNING coalesce((SELECT `+staleSQL+` FROM prev bb), false)`, instance, name).Scan(&wasDead)
	return wasDead, err
}

// BridgeStopped records a bridge's clean stop: a hub still registered on
// it is offline at once.
func (s *Store) BridgeStopped(ctx context.Context, instance string) error {
	_, err := s.Pool.Exec(ctx, `UPDATE bridge_beats SET stopped = true WHERE instance = $1`, instance)
	return err
}

// SweepDeadBridges marks disconnected every hub registered on a dead bridge
// other than self (a bridge never sweeps its own hubs), forgets bridges
// dead for an hour, and returns how many hubs it marked.
func (s *Store) SweepDeadBridges(ctx context.Context, self string) (int64, error) {
	tag, err := s.Pool.Exec(ctx, `UPDATE hubs h SET connected = false, bridge_lost_at = now()
		WHERE h.connected AND `+ownRegistrationSQL+` AND h.bridge_instance IN (SELECT bb.instance FROM bridge_beats bb WHERE bb.instance <> $1 AND `+staleSQL+`)`, self)
	if err != nil {
		return 0, err
	}
	_, err = s.Pool.Exec(ctx, `DELETE FROM bridge_beats WHERE instance <> $1 AND last_beat < now() - $2::interval`, self, bridgeForget.String())
	return tag.RowsAffected(), err
}

// ReclaimHubs marks connected again the hubs in deviceIDs that are still
// registered on bridge instance (no other bridge has taken them since) and
// that a sweep marked lost (bridge_lost_at): after a stall other bridges
// may have swept them while their links held. It returns how many it
// marked; a bridge calls it on every beat with the hubs it holds links for.
func (s *Store) ReclaimHubs(ctx context.Context, instance string, deviceIDs []string) (int64, error) {
	if len(deviceIDs) == 0 {
		return 0, nil
	}
	tag, err := s.Pool.Exec(ctx, `UPDATE hubs SET connected = true, bridge_lost_at = NULL
		WHERE bridge_instance = $1 AND instance_at IS NOT DISTINCT FROM connected_at AND device_id = ANY($2) AND NOT connected AND bridge_lost_at IS NOT NULL`,
		instance, deviceIDs)
	return tag.RowsAffected(), err
}

// LostHubs lists the hubs registered through the bridge instance that
// another bridge's sweep marked lost while it could not beat: the ones
// ReclaimHubs may take back.
func (s *Store) LostHubs(ctx context.Context, instance string) ([]string, error) {
	rows, err := s.Pool.Query(ctx, `SELECT device_id FROM hubs
		WHERE bridge_instance = $1 AND bridge_lost_at IS NOT NULL AND NOT connected AND instance_at IS NOT DISTINCT FROM connected_at`, instance)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// BridgeLiveness is one bridge process as the registry knows it.
type BridgeLiveness struct {
	Instance  string
	Name      string
	StartedAt time.Time
	LastBeat  time.Time
	Stopped   bool
	// Dead: stopped, or silent for longer than BridgeStale.
	Dead bool
}

// Bridges lists the bridge processes that beat within the last hour, the
// most recently started first.
func (s *Store) Bridges(ctx context.Context) ([]BridgeLiveness, error) {
	return queryAll(ctx, s, func(row pgx.Row) (BridgeLiveness, error) {
		var b BridgeLiveness
		err := row.Scan(&b.Instance, &b.Name, &b.StartedAt, &b.LastBeat, &b.Stopped, &b.Dead)
		return b, err
	}, `SELECT bb.instance, bb.name, bb.started_at, bb.last_beat, bb.stopped, `+staleSQL+` FROM bridge_beats bb ORDER BY bb.started_at DESC, bb.instance`)
}
