package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"

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

// RecordEval stores r under a new id (eval-<hex>) for r.Account and returns
// it as stored. An account that does not exist is ErrNotFound.
func (s *Store) RecordEval(ctx context.Context, r EvalRun) (EvalRun, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return r, err
	}
	r.ID = "eval-" + hex.EncodeToString(b[:])
	if r.Models == nil {
		r.Models = []string{}
	}
	err := s.Pool.QueryRow(ctx, `INSERT INTO eval_runs (id, account_id, dataset, seed, questions, budget, summaries, results, models)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING created_at`,
		r.ID, r.Account, r.Dataset, r.Seed, r.Questions, r.Budget, string(r.Summaries), string(r.Results), r.Models).Scan(&r.CreatedAt)
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

// RunUsage is what the run of account (its usage events since since) cost,
// credits included, and the models that answered it, sorted.
func (s *Store) RunUsage(ctx context.Context, account, run string, since time.Time) (money.Micros, []string, error) {
	var (
		gross  int64
		models []string
	)
	err := s.Pool.QueryRow(ctx, `SELECT coalesce(sum(gross), 0), coalesce(array_agg(DISTINCT model ORDER BY model) FILTER (WHERE model IS NOT NULL), '{}')
		FROM usage_events WHERE account_id = $1 AND created_at >= $3 AND split_part(event_id, '/', 1) = $2`, account, run, since).Scan(&gross, &models)
	return money.Micros(gross), models, err
}
