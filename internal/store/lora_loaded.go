package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/superinstance/mesh/internal/lora"
)

var _ lora.Shared = (*Store)(nil)

// loadStale is how long a claimed load may take before another replica
// takes it over (its claimant died mid-load).
const loadStale = 2 * time.Minute

// ClaimLoRA implements lora.Shared: under a lock on backend's set, a ready
// adapter is a hit (and becomes the most recently used), one another
// replica is loading is reported as such, and otherwise the caller claims
// the load and is given the least recently used ready adapters to unload
// so that the set stays within capacity.
func (s *Store) ClaimLoRA(ctx context.Context, backend, id string, capacity int) (lora.Claim, []string, error) {
	var claim lora.Claim
	var victims []string
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		claim, victims = lora.Claimed, nil
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('lora_loaded:' || $1))`, backend); err != nil {
			return err
		}
		var ready bool
		var claimedAt time.Time
		err := tx.QueryRow(ctx, `SELECT ready, claimed_at FROM lora_loaded WHERE backend = $1 AND adapter = $2`, backend, id).Scan(&ready, &claimedAt)
		switch {
		case err == nil && ready:
			claim = lora.Hit
			_, err = tx.Exec(ctx, `UPDATE lora_loaded SET last_used = clock_timestamp() WHERE backend = $1 AND adapter = $2`, backend, id)
			return err
		case err == nil && time.Since(claimedAt) < loadStale:
			claim = lora.Loading
			return nil
		case err != nil && !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO lora_loaded (backend, adapter, ready, claimed_at, last_used)
			VALUES ($1, $2, false, clock_timestamp(), clock_timestamp())
			ON CONFLICT (backend, adapter) DO UPDATE SET ready = false, claimed_at = excluded.claimed_at, last_used = excluded.last_used`,
			backend, id); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `DELETE FROM lora_loaded WHERE backend = $1 AND adapter IN (
				SELECT adapter FROM lora_loaded WHERE backend = $1 AND ready AND adapter <> $2
				ORDER BY last_used, adapter
				LIMIT greatest((SELECT count(*) FROM lora_loaded WHERE backend = $1) - $3, 0))
			RETURNING adapter`, backend, id, capacity)
		if err != nil {
			return err
		}
		victims, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return claim, victims, err
}

// ReadyLoRA implements lora.Shared: the claimed load of id is done.
func (s *Store) ReadyLoRA(ctx context.Context, backend, id string) error {
	_, err := s.Pool.Exec(ctx, `UPDATE lora_loaded SET ready = true, last_used = clock_timestamp() WHERE backend = $1 AND adapter = $2`, backend, id)
	return err
}

// DropLoRA implements lora.Shared: id is no longer loaded (a failed load,
// an eviction, or a backend that lost it).
func (s *Store) DropLoRA(ctx context.Context, backend, id string) error {
	_, err := s.Pool.Exec(ctx, `DELETE FROM lora_loaded WHERE backend = $1 AND adapter = $2`, backend, id)
	return err
}

// LoadedLoRAs implements lora.Shared: the ready adapters of backend, most
// recently used first.
func (s *Store) LoadedLoRAs(ctx context.Context, backend string) ([]string, error) {
	rows, err := s.Pool.Query(ctx, `SELECT adapter FROM lora_loaded WHERE backend = $1 AND ready ORDER BY last_used DESC, adapter`, backend)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
