-- Holds: the headroom a consensus reserves before any inference, so that
-- concurrent runs on one account (or one guest session) can never together
-- pass the credit ceiling (or the quota). A hold's open part is
-- greatest(amount - settled, 0) while it is active and unexpired; usage
-- logged against it adds to settled. The prices are the ones the amount was
-- worked out with (the most expensive model, the account's multiplier), so
-- the workflow can price its next step the same way.
CREATE TABLE holds (
    id                   text PRIMARY KEY,
    account_id           text NOT NULL REFERENCES accounts (id),
    guest_session        text REFERENCES guest_sessions (id),
    amount               bigint NOT NULL CHECK (amount >= 0),
    settled              bigint NOT NULL DEFAULT 0 CHECK (settled >= 0),
    prompt_per_mtok      bigint NOT NULL CHECK (prompt_per_mtok >= 0),
    completion_per_mtok  bigint NOT NULL CHECK (completion_per_mtok >= 0),
    multiplier_ppm       bigint NOT NULL CHECK (multiplier_ppm > 0),
    state                text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'released')),
    expires_at           timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX holds_account_active ON holds (account_id) WHERE state = 'active';
CREATE INDEX holds_guest_active ON holds (guest_session) WHERE state = 'active';

ALTER TABLE usage_events ADD COLUMN hold_id text REFERENCES holds (id);
