-- si eval's reports, one row per evaluation, each the account's own: the
-- data set it ran, its seed, size and token budget, a summary per strategy
-- and every question's result (JSON, as POST /v1/evals validated it), and
-- the models that answered, from the ledger (a simulator's name says so).
CREATE TABLE eval_runs (
    id          text PRIMARY KEY,
    account_id  text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    dataset     text NOT NULL CHECK (dataset IN ('arithmetic', 'gsm-mini')),
    seed        bigint NOT NULL,
    questions   integer NOT NULL CHECK (questions BETWEEN 1 AND 1000),
    budget      integer NOT NULL CHECK (budget > 0),
    summaries   jsonb NOT NULL,
    results     jsonb NOT NULL,
    models      text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX eval_runs_by_account ON eval_runs (account_id, created_at DESC);
