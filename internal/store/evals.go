package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"
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
}

// RecordEval stores r under a new id (eval-<hex>) for r.Account and returns
// it as stored. An account that does not exist is ErrNotFound.
func (s *Store) RecordEval(ctx context.Context, r EvalRun) (EvalRun, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return r, err
	}
	r.ID = "eval-" + hex.EncodeToString(b[:])
	err := s.Pool.QueryRow(ctx, `INSERT INTO eval_runs (id, account_id, dataset, seed, questions, budget, summaries, results)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING created_at`,
		r.ID, r.Account, r.Dataset, r.Seed, r.Questions, r.Budget, string(r.Summaries), string(r.Results)).Scan(&r.CreatedAt)
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
	rows, err := s.Pool.Query(ctx, `SELECT id, account_id, created_at, dataset, seed, questions, budget, summaries
		FROM eval_runs WHERE account_id = $1 ORDER BY created_at DESC, id LIMIT $2`, account, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []EvalRun{}
	for rows.Next() {
		var r EvalRun
		var sums []byte
		if err := rows.Scan(&r.ID, &r.Account, &r.CreatedAt, &r.Dataset, &r.Seed, &r.Questions, &r.Budget, &sums); err != nil {
			return nil, err
		}
		r.Summaries = json.RawMessage(sums)
		out = append(out, r)
	}
	return out, rows.Err()
}
