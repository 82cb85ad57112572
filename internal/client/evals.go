package client

import (
	"context"
	"fmt"
	"time"

	"github.com/superinstance/mesh/internal/eval"
)

// EvalReport is what si eval records: the data set, and each question's
// result per strategy. The mesh sums it and takes each run's cost from
// its ledger.
type EvalReport struct {
	Dataset   string        `json:"dataset"`
	Seed      int64         `json:"seed"`
	Questions int           `json:"questions"`
	Budget    int           `json:"budget"`
	Results   []eval.Result `json:"results"`
}

// Eval is a recorded evaluation.
type Eval struct {
	ID        string         `json:"id"`
	CreatedAt time.Time      `json:"created_at"`
	Dataset   string         `json:"dataset"`
	Seed      int64          `json:"seed"`
	Questions int            `json:"questions"`
	Budget    int            `json:"budget"`
	Summaries []eval.Summary `json:"summaries"`
	// Models answered the runs, by the ledger; Simulated: one is the simulator.
	Models    []string `json:"models"`
	Simulated bool     `json:"simulated"`
}

// RecordEval stores an evaluation for the token's account.
func (c *Client) RecordEval(ctx context.Context, r EvalReport) (Eval, error) {
	var e Eval
	return e, c.do(ctx, "POST", "/v1/evals", r, &e)
}

// Evals lists the account's evaluations, newest first.
func (c *Client) Evals(ctx context.Context, limit int) ([]Eval, error) {
	var out struct {
		Evals []Eval `json:"evals"`
	}
	return out.Evals, c.do(ctx, "GET", fmt.Sprintf("/v1/evals?limit=%d", limit), nil, &out)
}
