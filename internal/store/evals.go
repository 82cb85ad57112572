package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/superinstance/mesh/internal/money"
)

// EvalRun is one si eval report of an account. Summaries and Results are
// JSON the API validated; the store keeps them as given.
type EvalRun struct {
	ID        string          `json:"id"`
	Account   string          `json:"account"`
	CreatedAt time.Time       `json:"created_at"`
	Dataset   string          `json:"dataset"`
	Seed      int64           `json:"seed"`
	Questions int             `json:"questions"`
	Budget    int             `json:"budget"`
	Summaries json.RawMessage `json:"summaries"`
	Results   json.RawMessage `json:"results,omitempty"`
	// Models are the models that answered the runs, sorted.
	Models []string `json:"models"`
}

// Bounds of an account's evaluations: it keeps its newest EvalsKept, and
// records at most EvalsPerMinute in any minute.
const (
	EvalsKept      = 200
	EvalsPerMinute = 10
)

// ErrEvalRateLimited is RecordEval's answer to an account that recorded
// EvalsPerMinute evaluations in the last minute.
var ErrEvalRateLimited = errors.New("store: too many evaluations recorded in the last minute")

// RecordEval stores r under a new id (eval-<hex>) for r.Account and returns
// it as stored, then forgets the account's evaluations beyond its newest
// EvalsKept. An account that does not exist is ErrNotFound; one that
// recorded EvalsPerMinute in the last minute is ErrEvalRateLimited.
func (s *Store) RecordEval(ctx context.Context, r EvalRun) (EvalRun, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return r, err
	}
	r.ID = "eval-" + hex.EncodeToString(b[:])
	if r.Models == nil {
		r.Models = []string{}
	}
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		// One recording at a time per account, so the count below holds.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('eval_runs/' || $1, 0))`, r.Account); err != nil {
			return err
		}
		var recent int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM eval_runs WHERE account_id = $1 AND created_at > now() - interval '1 minute'`,
			r.Account).Scan(&recent); err != nil {
			return err
		}
		if recent >= EvalsPerMinute {
			return ErrEvalRateLimited
		}
		if err := tx.QueryRow(ctx, `INSERT INTO eval_runs (id, account_id, dataset, seed, questions, budget, summaries, results, models)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING created_at`,
			r.ID, r.Account, r.Dataset, r.Seed, r.Questions, r.Budget, string(r.Summaries), string(r.Results), r.Models).Scan(&r.CreatedAt); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM eval_runs WHERE account_id = $1 AND id NOT IN
			(SELECT id FROM eval_runs WHERE account_id = $1 ORDER BY created_at DESC, id LIMIT $2)`, r.Account, EvalsKept)
		return err
	})
	if err != nil && strings.Contains(err.Error(), "eval_runs_account_id_fkey") {
		return r, ErrNotFound
	}
	return r, err
}

// Evals lists account's evaluations, newest first, at most limit of them,
// without their per-question results.
func (s *Store) Evals(ctx context.Context, account string, limit int) ([]EvalRun, error) {
	if limit <= 0 {
		return nil, errors.New("store: Evals needs a positive limit")
	}
	rows, err := s.Pool.Query(ctx, `SELECT id, account_id, created_at, dataset, seed, questions, budget, summaries, models
		FROM eval_runs WHERE account_id = $1 ORDER BY created_at DESC, id LIMIT $2`, account, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []EvalRun{}
	for rows.Next() {
		var r EvalRun
		var sums []byte
		if err := rows.Scan(&r.ID, &r.Account, &r.CreatedAt, &r.Dataset, &r.Seed, &r.Questions, &r.Budget, &sums, &r.Models); err != nil {
			return nil, err
		}
		r.Summaries = json.RawMessage(sums)
		out = append(out, r)
	}
	return out, rows.Err()
}

// RunCost is what one run cost according to the ledger: its usage
// events' gross (credits included), prompt and completion tokens, and the
// models that answered it, sorted.
type RunCost struct {
	Cost   money.Micros
	Tokens int64
	Models []string
}

// RunsUsage is what each of runs of account cost (its usage events since
// since), in one query; a run with no usage events is absent. Sums that
// would overflow an int64 are refused by PostgreSQL, not wrapped.
func (s *Store) RunsUsage(ctx context.Context, account string, runs []string, since time.Time) (map[string]RunCost, error) {
	out := map[string]RunCost{}
	if len(runs) == 0 {
		return out, nil
	}
	rows, err := s.Pool.Query(ctx, `SELECT split_part(event_id, '/', 1), sum(gross)::bigint, sum(prompt_tokens + completion_tokens)::bigint,
		coalesce(array_agg(DISTINCT model ORDER BY model) FILTER (WHERE model IS NOT NULL), '{}')
		FROM usage_events WHERE account_id = $1 AND created_at >= $3 AND split_part(event_id, '/', 1) = ANY($2) GROUP BY 1`, account, runs, since)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			run           string
			gross, tokens int64
			models        []string
		)
		if err := rows.Scan(&run, &gross, &tokens, &models); err != nil {
			return nil, err
		}
		out[run] = RunCost{Cost: money.Micros(gross), Tokens: tokens, Models: models}
	}
	return out, rows.Err()
}
