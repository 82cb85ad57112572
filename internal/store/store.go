// Package store is the mesh's PostgreSQL layer: connection, embedded numbered
// migrations and the queries the roles share. pgx.ErrNoRows never leaves this
// package; callers see ErrNotFound.
package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// Store holds the connection pool. Its methods are safe for concurrent use.
type Store struct {
	Pool *pgxpool.Pool
	// vitalsPruned is when the vitals history was last pruned (Unix ns).
	vitalsPruned atomic.Int64
}

// Open connects to url and applies any pending migrations.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach PostgreSQL at %s: %w", redact(url), err)
	}
	if _, err := Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{Pool: pool}, nil
}

// Close releases the pool.
func (s *Store) Close() { s.Pool.Close() }

var projectID = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidProjectID reports whether id can name a project: lower-case letters,
// digits, '.', '_' and '-', at most 63 characters, starting with a letter or digit.
func ValidProjectID(id string) error {
	if !projectID.MatchString(id) {
		return fmt.Errorf("invalid project %q: use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

// EnsureProject creates the project if it does not exist.
func (s *Store) EnsureProject(ctx context.Context, id string) error {
	if err := ValidProjectID(id); err != nil {
		return err
	}
	_, err := s.Pool.Exec(ctx, `INSERT INTO projects (id) VALUES ($1) ON CONFLICT DO NOTHING`, id)
	return err
}

// ConsensusRun is the stored summary of one finished ConsensusWorkflow.
type ConsensusRun struct {
	WorkflowID string
	Project    string
	Prompt     string
	Status     string
	Score      float64
	Rounds     int
	Answer     string
	Placement  string
	Account    string
	// Strategy is debate, vote or single; empty (a record from a history
	// older than strategies) is stored as debate.
	Strategy   string
	FinishedAt time.Time
}

// RecordConsensus stores a run's summary. Recording the same workflow twice
// (an activity retry) keeps one row with the latest values.
func (s *Store) RecordConsensus(ctx context.Context, r ConsensusRun) error {
	strategy := r.Strategy
	if strategy == "" {
		strategy = "debate"
	}
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO projects (id) VALUES ($1) ON CONFLICT DO NOTHING`, r.Project); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO consensus_runs (workflow_id, project_id, prompt, status, score, rounds, answer, placement, account, strategy)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (workflow_id) DO UPDATE SET status = excluded.status, score = excluded.score,
				rounds = excluded.rounds, answer = excluded.answer, placement = excluded.placement, strategy = excluded.strategy`,
			r.WorkflowID, r.Project, r.Prompt, r.Status, r.Score, r.Rounds, r.Answer, r.Placement, r.Account, strategy)
		return err
	})
}

// ConsensusRun returns one stored run.
func (s *Store) ConsensusRun(ctx context.Context, workflowID string) (ConsensusRun, error) {
	var r ConsensusRun
	err := s.Pool.QueryRow(ctx, `
		SELECT workflow_id, project_id, prompt, status, score, rounds, answer, placement, account, strategy, finished_at
		FROM consensus_runs WHERE workflow_id = $1`, workflowID).
		Scan(&r.WorkflowID, &r.Project, &r.Prompt, &r.Status, &r.Score, &r.Rounds, &r.Answer, &r.Placement, &r.Account, &r.Strategy, &r.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, ErrNotFound
	}
	return r, err
}

// RecentRuns returns a project's latest finished runs, newest first; only
// those billed to account when account is not "". A named project's runs
// are those of accounts that own or edit it now: a run another account
// recorded under it is not the project's.
func (s *Store) RecentRuns(ctx context.Context, project, account string, limit int) ([]ConsensusRun, error) {
	rows, err := s.Pool.Query(ctx, `
		SELECT workflow_id, project_id, prompt, status, score, rounds, answer, placement, account, strategy, finished_at
		FROM consensus_runs r WHERE project_id = $1 AND ($2 = '' OR account = $2)
		  AND (project_id = $4 OR EXISTS (SELECT 1 FROM project_members m
		       WHERE m.project_id = r.project_id AND m.account_id = r.account AND m.role IN ($5, $6)))
		ORDER BY finished_at DESC LIMIT $3`, project, account, limit, DefaultProject, RoleOwner, RoleEditor)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ConsensusRun
	for rows.Next() {
		var r ConsensusRun
		if err := rows.Scan(&r.WorkflowID, &r.Project, &r.Prompt, &r.Status, &r.Score, &r.Rounds, &r.Answer, &r.Placement, &r.Account, &r.Strategy, &r.FinishedAt); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// queryAll runs a query and scans every row with scan.
func queryAll[T any](ctx context.Context, s *Store, scan func(pgx.Row) (T, error), sql string, args ...any) ([]T, error) {
	rows, err := s.Pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// redact hides a password in a connection string for error messages.
func redact(url string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "(unparseable url)"
	}
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}
