package store

import (
	"context"
	"errors"
	"fmt"
	"unicode"

	"github.com/superinstance/mesh/internal/money"
)

// ModelPrice is a model's cost basis per million tokens; model "*" prices
// every model without a row of its own.
type ModelPrice struct {
	Model             string       `json:"model"`
	PromptPerMTok     money.Micros `json:"prompt_per_mtok_micros"`
	CompletionPerMTok money.Micros `json:"completion_per_mtok_micros"`
}

// ValidModelName checks a model name as an inference server would take it:
// 1 to 200 printable characters without spaces; "*" is the default price.
func ValidModelName(m string) error {
	if m == "" || len(m) > 200 {
		return fmt.Errorf("invalid model name %q: give 1 to 200 characters (\"*\" prices every other model)", m)
	}
	for _, r := range m {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("invalid model name %q: no spaces or control characters", m)
		}
	}
	return nil
}

// SetModelPrice sets a model's prices, creating its row if new. It applies
// to usage logged from now on.
func (s *Store) SetModelPrice(ctx context.Context, p ModelPrice) error {
	if err := ValidModelName(p.Model); err != nil {
		return err
	}
	if p.PromptPerMTok < 0 || p.CompletionPerMTok < 0 {
		return errors.New("a price cannot be negative")
	}
	_, err := s.Pool.Exec(ctx, `INSERT INTO model_prices (model, prompt_per_mtok, completion_per_mtok) VALUES ($1, $2, $3)
		ON CONFLICT (model) DO UPDATE SET prompt_per_mtok = excluded.prompt_per_mtok, completion_per_mtok = excluded.completion_per_mtok`,
		p.Model, p.PromptPerMTok, p.CompletionPerMTok)
	return err
}

// ModelPrices lists the model prices by name, the default ("*") last.
func (s *Store) ModelPrices(ctx context.Context) ([]ModelPrice, error) {
	rows, err := s.Pool.Query(ctx, `SELECT model, prompt_per_mtok, completion_per_mtok FROM model_prices ORDER BY model = '*', model`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []ModelPrice{}
	for rows.Next() {
		var p ModelPrice
		if err := rows.Scan(&p.Model, &p.PromptPerMTok, &p.CompletionPerMTok); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// SetFlushThreshold sets the unbilled balance at which an account's
// balance is flushed to Stripe.
func (s *Store) SetFlushThreshold(ctx context.Context, account string, threshold money.Micros) (Account, error) {
	if threshold < money.Cent {
		return Account{}, fmt.Errorf("the flush threshold must be at least one cent (%s): Stripe is sent whole cents", money.Cent)
	}
	return scanAccount(s.Pool.QueryRow(ctx, `UPDATE accounts SET flush_threshold = $2 WHERE id = $1 RETURNING `+accountColumns, account, threshold))
}
