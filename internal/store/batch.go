package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/superinstance/mesh/internal/money"
)

// LogUsageBatch logs events of one account with the rules of LogUsage
// applied to each in order, in one call of the database function
// log_usage_batch (migration 0016): one statement, so one round trip and
// its implicit transaction. The account row is locked once, the sessions
// the batch names once each (in id order), and the events and their
// journal lines go in one statement each. A refusal (a *SuspendedError, a
// *GuestQuotaError) stops the batch there: the events before it are
// logged, their charges returned, and the refusal returned with them. Any
// other error logs nothing.
func (s *Store) LogUsageBatch(ctx context.Context, events []Usage) ([]Charge, error) {
	if len(events) == 0 {
		return nil, nil
	}
	account := events[0].Account
	n := len(events)
	ids, projects, guests, models, holds := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	prompt, completion, served := make([]int64, n), make([]int64, n), make([]bool, n)
	for i, u := range events {
		if u.EventID == "" || u.Account == "" || u.Model == "" {
			return nil, errors.New("usage needs an event id, an account and a model")
		}
		if u.Account != account {
			return nil, errors.New("a usage batch is for one account")
		}
		if u.PromptTokens < 0 || u.CompletionTokens < 0 {
			return nil, errors.New("token counts cannot be negative")
		}
		ids[i], projects[i], guests[i], models[i], holds[i] = u.EventID, u.Project, u.GuestSession, u.Model, u.Hold
		prompt[i], completion[i], served[i] = u.PromptTokens, u.CompletionTokens, u.Served
	}
	rows, err := s.Pool.Query(ctx, `SELECT * FROM log_usage_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		account, ids, projects, guests, models, prompt, completion, holds, served)
	if err != nil {
		return nil, batchError(err, account)
	}
	defer rows.Close()
	var out []Charge
	var refusal error
	for rows.Next() {
		var c Charge
		var kind, detail string
		var ceiling money.Micros
		if err := rows.Scan(&c.EventID, &c.CostBasis, &c.Multiplier, &c.Gross, &c.CreditsApplied, &c.Charged, &c.Duplicate, &c.Suspended,
			&c.Unbilled, &c.FlushDue, &c.GuestRemaining, &c.GuestCapped, &kind, &detail, &ceiling); err != nil {
			return nil, err
		}
		switch kind {
		case "":
			out = append(out, c)
		case "suspended":
			refusal = &SuspendedError{Account: account, Reason: detail, Unbilled: c.Unbilled, Ceiling: ceiling}
		case "guest_quota":
			refusal = &GuestQuotaError{Session: detail}
		default:
			return nil, fmt.Errorf("log_usage_batch: unknown refusal %q", kind)
		}
	}
	// The statement commits when its last row is read: an error here
	// (the commit's included) means nothing of the batch was logged.
	if err := rows.Err(); err != nil {
		return nil, batchError(err, account)
	}
	return out, refusal
}

// batchError turns log_usage_batch's raised errors into the store's.
func batchError(err error, account string) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case pe.Code == "P0002" && pe.Detail == "price":
		return fmt.Errorf("%s: %w", pe.Message, pgx.ErrNoRows)
	case pe.Code == "P0002" && pe.Detail == "account":
		return fmt.Errorf("account %s: %w", account, ErrNotFound)
	case pe.Code == "P0002":
		return fmt.Errorf("%s: %w", pe.Message, ErrNotFound)
	case pe.Code == "22003":
		return money.ErrOverflow
	}
	return err
}
