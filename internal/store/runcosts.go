package store

import (
	"context"
	"time"

	"github.com/superinstance/mesh/internal/money"
)

// A consensus run's usage events are "<workflow id>/<step id>", billed to
// the run's account while it runs: the queries below find them through the
// account's (account_id, created_at) index.

// maxRunLength bounds how long before it finished a run's first event was
// logged (its hold lasts far less).
const maxRunLength = 24 * time.Hour

// RunCosts is what each finished run cost (the gross of its usage events,
// credits included), by workflow id; a run with no events is absent.
func (s *Store) RunCosts(ctx context.Context, runs []ConsensusRun) (map[string]money.Micros, error) {
	out := map[string]money.Micros{}
	for _, r := range runs {
		var gross int64
		err := s.Pool.QueryRow(ctx, `SELECT coalesce(sum(gross), 0) FROM usage_events
			WHERE account_id = $1 AND created_at BETWEEN $2 AND $3 AND split_part(event_id, '/', 1) = $4`,
			r.Account, r.FinishedAt.Add(-maxRunLength), r.FinishedAt.Add(time.Minute), r.WorkflowID).Scan(&gross)
		if err != nil {
			return nil, err
		}
		if gross > 0 {
			out[r.WorkflowID] = money.Micros(gross)
		}
	}
	return out, nil
}

// StepCosts is what each step of the run of account started at or after
// since cost, by step id (the part of the event id after "<run>/").
func (s *Store) StepCosts(ctx context.Context, account, run string, since time.Time) (map[string]money.Micros, error) {
	rows, err := s.Pool.Query(ctx, `SELECT substr(event_id, length($2) + 2), gross FROM usage_events
		WHERE account_id = $1 AND created_at >= $3 AND split_part(event_id, '/', 1) = $2`, account, run, since)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]money.Micros{}
	for rows.Next() {
		var step string
		var gross int64
		if err := rows.Scan(&step, &gross); err != nil {
			return nil, err
		}
		out[step] = money.Micros(gross)
	}
	return out, rows.Err()
}
