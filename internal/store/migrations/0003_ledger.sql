-- The billing ledger. Money is integer micro-dollars (bigint); multipliers
-- are parts per million. The books balance per account:
--   sum(usage_events.charged) = sum(sent flushes, in micro-dollars) + accounts.unbilled
-- and every balance can be recomputed from the append-only journal.
CREATE TABLE accounts (
    id                text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    email             text UNIQUE,
    tier              text NOT NULL DEFAULT 'managed',
    credits           bigint NOT NULL DEFAULT 0 CHECK (credits >= 0),
    unbilled          bigint NOT NULL DEFAULT 0 CHECK (unbilled >= 0),
    credit_ceiling    bigint NOT NULL DEFAULT 100000000 CHECK (credit_ceiling > 0),
    flush_threshold   bigint NOT NULL DEFAULT 10000000 CHECK (flush_threshold > 0),
    status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    suspended_reason  text NOT NULL DEFAULT '' CHECK (suspended_reason IN ('', 'credit_ceiling', 'payment_failed')),
    stripe_customer_id text,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- Tier multipliers; the defaults are managed 1.03 and bring-your-own-key 1.30.
CREATE TABLE pricing_tiers (
    tier            text PRIMARY KEY,
    multiplier_ppm  bigint NOT NULL CHECK (multiplier_ppm > 0)
);
INSERT INTO pricing_tiers (tier, multiplier_ppm) VALUES ('managed', 1030000), ('byok', 1300000);
ALTER TABLE accounts ADD FOREIGN KEY (tier) REFERENCES pricing_tiers (tier);

-- Cost basis per model, in micro-dollars per million tokens; '*' prices any other model.
CREATE TABLE model_prices (
    model                  text PRIMARY KEY,
    prompt_per_mtok        bigint NOT NULL CHECK (prompt_per_mtok >= 0),
    completion_per_mtok    bigint NOT NULL CHECK (completion_per_mtok >= 0)
);
INSERT INTO model_prices (model, prompt_per_mtok, completion_per_mtok) VALUES
    ('si-simulator-small', 150000, 600000),
    ('si-simulator-large', 2500000, 10000000),
    ('*', 500000, 1500000);

CREATE TABLE usage_events (
    event_id           text PRIMARY KEY,
    account_id         text NOT NULL REFERENCES accounts (id),
    project_id         text NOT NULL,
    guest_session      text,
    model              text NOT NULL,
    prompt_tokens      bigint NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens  bigint NOT NULL CHECK (completion_tokens >= 0),
    cost_basis         bigint NOT NULL CHECK (cost_basis >= 0),
    multiplier_ppm     bigint NOT NULL,
    gross              bigint NOT NULL CHECK (gross >= 0),
    credits_applied    bigint NOT NULL CHECK (credits_applied >= 0),
    charged            bigint NOT NULL CHECK (charged >= 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (gross = credits_applied + charged)
);
CREATE INDEX usage_events_account ON usage_events (account_id, created_at);

CREATE TABLE flushes (
    id                 text PRIMARY KEY,
    account_id         text NOT NULL REFERENCES accounts (id),
    amount_cents       bigint NOT NULL CHECK (amount_cents > 0),
    state              text NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    stripe_identifier  text NOT NULL,
    attempts           integer NOT NULL DEFAULT 0,
    error              text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- One flush in flight per account: a second would bill the same balance twice.
CREATE UNIQUE INDEX flushes_one_pending ON flushes (account_id) WHERE state = 'pending';

CREATE TABLE journal (
    seq            bigserial PRIMARY KEY,
    account_id     text NOT NULL REFERENCES accounts (id),
    kind           text NOT NULL CHECK (kind IN ('usage', 'credit', 'flush')),
    ref            text NOT NULL,
    credits_delta  bigint NOT NULL DEFAULT 0,
    unbilled_delta bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX journal_account ON journal (account_id, seq);
