package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/superinstance/mesh/internal/money"
)

// LogUsageBatch logs events of one account in one transaction, with the
// rules of LogUsage applied to each in order: the account row is locked
// once, the sessions it names once each (in id order), and the events and
// their journal lines go in one statement each. The transaction is two
// pipelines, so two round trips: one begins and reads, one writes and
// commits. A refusal (a *SuspendedError,
// a *GuestQuotaError) stops the batch there: the events before it are
// logged, their charges returned, and the refusal returned with them.
func (s *Store) LogUsageBatch(ctx context.Context, events []Usage) ([]Charge, error) {
	if len(events) == 0 {
		return nil, nil
	}
	account := events[0].Account
	for _, u := range events {
		if u.EventID == "" || u.Account == "" || u.Model == "" {
			return nil, errors.New("usage needs an event id, an account and a model")
		}
		if u.Account != account {
			return nil, errors.New("a usage batch is for one account")
		}
		if u.PromptTokens < 0 || u.CompletionTokens < 0 {
			return nil, errors.New("token counts cannot be negative")
		}
	}
	ids, models, sessions, holds := make([]string, len(events)), []string{}, []string{}, []string{}
	for i, u := range events {
		ids[i] = u.EventID
		models = append(models, u.Model)
		if u.GuestSession != "" {
			sessions = append(sessions, u.GuestSession)
		}
		if u.Hold != "" {
			holds = append(holds, u.Hold)
		}
	}
	slices.Sort(sessions)
	sessions = slices.Compact(sessions)

	// The batch takes two round trips: one pipeline opens the transaction
	// and reads (the account locked first, then its sessions in id order,
	// as LogUsage and ReserveHold lock them), the other writes and commits.
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// A connection left inside a transaction is closed, not reused, by
	// Release; the rollback below is the ordinary way out of one.
	defer conn.Release()
	rollback := func(err error) ([]Charge, error) {
		if conn.Conn().PgConn().TxStatus() != 'I' {
			_, _ = conn.Exec(ctx, "rollback")
		}
		return nil, err
	}

	read := &pgx.Batch{}
	read.Queue("begin")
	read.Queue(`SELECT a.credits, a.unbilled, a.credit_ceiling, a.flush_threshold, a.status, a.suspended_reason, p.multiplier_ppm
			FROM accounts a JOIN pricing_tiers p ON p.tier = a.tier WHERE a.id = $1 FOR UPDATE OF a`, account)
	for _, g := range sessions {
		read.Queue(`SELECT remaining, host_id FROM guest_sessions WHERE id = $1 FOR UPDATE`, g)
	}
	read.Queue(`SELECT event_id, cost_basis, multiplier_ppm, gross, credits_applied, charged FROM usage_events WHERE event_id = ANY($1)`, ids)
	read.Queue(`SELECT model, prompt_per_mtok, completion_per_mtok FROM model_prices WHERE model = ANY($1) OR model = '*'`, models)
	if len(holds) > 0 {
		read.Queue(`SELECT id, coalesce(guest_session, '') FROM holds WHERE id = ANY($1) AND account_id = $2`, holds, account)
	}

	var a Account
	var mult money.PPM
	remaining := map[string]money.Micros{}
	logged := map[string]Charge{}
	prices := map[string][2]money.Micros{}
	// The holds of this account, by id, with their session.
	holdGuest := map[string]string{}
	write := &pgx.Batch{}
	err = func() error {
		br := conn.SendBatch(ctx, read)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		// Every result is read before a refusal is returned, so that the
		// pipeline ends cleanly and the transaction can be rolled back.
		var missing error
		err := br.QueryRow().Scan(&a.Credits, &a.Unbilled, &a.CreditCeiling, &a.FlushThreshold, &a.Status, &a.SuspendedReason, &mult)
		if errors.Is(err, pgx.ErrNoRows) {
			missing = fmt.Errorf("account %s: %w", account, ErrNotFound)
		} else if err != nil {
			return err
		}
		for _, g := range sessions {
			var left money.Micros
			var host string
			err := br.QueryRow().Scan(&left, &host)
			if (errors.Is(err, pgx.ErrNoRows) || (err == nil && host != account)) && missing == nil {
				missing = fmt.Errorf("guest session %s of account %s: %w", g, account, ErrNotFound)
			} else if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			remaining[g] = left
		}
		if err := scanRows(br, true, func(rows pgx.Rows) error {
			var c Charge
			if err := rows.Scan(&c.EventID, &c.CostBasis, &c.Multiplier, &c.Gross, &c.CreditsApplied, &c.Charged); err != nil {
				return err
			}
			logged[c.EventID] = c
			return nil
		}); err != nil {
			return err
		}
		if err := scanRows(br, true, func(rows pgx.Rows) error {
			var m string
			var p [2]money.Micros
			if err := rows.Scan(&m, &p[0], &p[1]); err != nil {
				return err
			}
			prices[m] = p
			return nil
		}); err != nil {
			return err
		}
		if err := scanRows(br, len(holds) > 0, func(rows pgx.Rows) error {
			var id, g string
			if err := rows.Scan(&id, &g); err != nil {
				return err
			}
			holdGuest[id] = g
			return nil
		}); err != nil {
			return err
		}
		if err := br.Close(); err != nil {
			return err
		}
		return missing
	}()
	if err != nil {
		return rollback(err)
	}

	var out []Charge
	var refusal error
	err = func() error {
		var ins []Usage
		var charges []Charge
		settled := map[string]money.Micros{}
		touched := map[string]bool{}
		spentCredits := money.Micros(0)
		for _, u := range events {
			c := Charge{EventID: u.EventID}
			if prev, ok := logged[u.EventID]; ok {
				out = append(out, Charge{EventID: prev.EventID, CostBasis: prev.CostBasis, Multiplier: prev.Multiplier, Gross: prev.Gross,
					CreditsApplied: prev.CreditsApplied, Charged: prev.Charged, Duplicate: true, Unbilled: a.Unbilled})
				continue
			}
			g, ok := holdGuest[u.Hold]
			held := u.Hold != "" && ok && g == u.GuestSession
			if a.Status == "suspended" && !held {
				refusal = &SuspendedError{Account: account, Reason: a.SuspendedReason, Unbilled: a.Unbilled, Ceiling: a.CreditCeiling}
				break
			}
			p, ok := prices[u.Model]
			if !ok {
				if p, ok = prices["*"]; !ok {
					return fmt.Errorf("price of model %s: %w", u.Model, pgx.ErrNoRows)
				}
			}
			if c.CostBasis, err = CostBasis(p[0], p[1], u.PromptTokens, u.CompletionTokens); err != nil {
				return err
			}
			c.Multiplier = mult
			if c.Gross, err = money.Apply(c.CostBasis, mult); err != nil {
				return err
			}
			if u.GuestSession != "" {
				left := remaining[u.GuestSession]
				if left <= 0 && !held {
					refusal = &GuestQuotaError{Session: u.GuestSession}
					break
				}
				if c.Gross > left {
					c.Gross, c.GuestCapped = left, true
				}
				c.GuestRemaining = left - c.Gross
				remaining[u.GuestSession] = c.GuestRemaining
				touched[u.GuestSession] = true
			}
			if held {
				settled[u.Hold] += c.Gross
			}
			c.CreditsApplied = min(a.Credits, c.Gross)
			c.Charged = c.Gross - c.CreditsApplied
			if c.Unbilled, err = money.Add(a.Unbilled, c.Charged); err != nil {
				return err
			}
			a.Credits -= c.CreditsApplied
			spentCredits += c.CreditsApplied
			a.Unbilled = c.Unbilled
			c.Suspended = c.Unbilled >= a.CreditCeiling
			c.FlushDue = c.Unbilled >= a.FlushThreshold
			if c.Suspended && a.Status != "suspended" {
				// A held call on an account suspended for another reason
				// keeps that reason.
				a.Status, a.SuspendedReason = "suspended", "credit_ceiling"
			}
			logged[u.EventID] = c
			ins = append(ins, u)
			charges = append(charges, c)
			out = append(out, c)
		}
		if len(ins) == 0 {
			return nil
		}
		cols := struct {
			id, project, guest, model, hold          []string
			pt, ct, cost, mult, gross, credits, chgd []int64
		}{}
		for i, u := range ins {
			c := charges[i]
			cols.id = append(cols.id, u.EventID)
			cols.project = append(cols.project, u.Project)
			cols.guest = append(cols.guest, u.GuestSession)
			cols.model = append(cols.model, u.Model)
			h := ""
			if g, ok := holdGuest[u.Hold]; ok && u.Hold != "" && g == u.GuestSession {
				h = u.Hold
			}
			cols.hold = append(cols.hold, h)
			cols.pt = append(cols.pt, u.PromptTokens)
			cols.ct = append(cols.ct, u.CompletionTokens)
			cols.cost = append(cols.cost, int64(c.CostBasis))
			cols.mult = append(cols.mult, int64(c.Multiplier))
			cols.gross = append(cols.gross, int64(c.Gross))
			cols.credits = append(cols.credits, int64(c.CreditsApplied))
			cols.chgd = append(cols.chgd, int64(c.Charged))
		}
		write.Queue(`INSERT INTO usage_events (event_id, account_id, project_id, guest_session, model, prompt_tokens,
			completion_tokens, cost_basis, multiplier_ppm, gross, credits_applied, charged, hold_id)
			SELECT e, $2, p, nullif(g, ''), m, pt, ct, cb, mu, gr, ca, ch, nullif(h, '')
			FROM unnest($1::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
				$10::bigint[], $11::bigint[], $12::bigint[], $13::text[]) AS t(e, p, g, m, pt, ct, cb, mu, gr, ca, ch, h)`,
			cols.id, account, cols.project, cols.guest, cols.model, cols.pt, cols.ct, cols.cost, cols.mult, cols.gross, cols.credits,
			cols.chgd, cols.hold)
		negCredits := make([]int64, len(cols.credits))
		for i, v := range cols.credits {
			negCredits[i] = -v
		}
		write.Queue(`INSERT INTO journal (account_id, kind, ref, credits_delta, unbilled_delta)
			SELECT $1, 'usage', r, cd, ud FROM unnest($2::text[], $3::bigint[], $4::bigint[]) WITH ORDINALITY AS t(r, cd, ud, o) ORDER BY o`,
			account, cols.id, negCredits, cols.chgd)
		write.Queue(`UPDATE accounts SET credits = credits - $2, unbilled = $3, status = $4, suspended_reason = $5 WHERE id = $1`,
			account, spentCredits, a.Unbilled, a.Status, a.SuspendedReason)
		for _, g := range sessions {
			if touched[g] {
				write.Queue(`UPDATE guest_sessions SET remaining = $2 WHERE id = $1`, g, remaining[g])
			}
		}
		for _, h := range slices.Sorted(maps.Keys(settled)) {
			write.Queue(`UPDATE holds SET settled = settled + $2, updated_at = now() WHERE id = $1`, h, settled[h])
		}
		return nil
	}()
	if err != nil {
		return rollback(err)
	}
	write.Queue("commit")
	if err := conn.SendBatch(ctx, write).Close(); err != nil {
		return rollback(err)
	}
	return out, refusal
}

// scanRows reads the next result of br, a query, calling fn for each row;
// a query not queued (queued false) has no result and no rows.
func scanRows(br pgx.BatchResults, queued bool, fn func(pgx.Rows) error) error {
	if !queued {
		return nil
	}
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
