-- One-time enrollment tokens: the operator issues one for an account and a
-- device name; the hub redeems it once, before it expires, for its first
-- certificate. Only the token's SHA-256 is kept.
CREATE TABLE enrollment_tokens (
    hash        bytea PRIMARY KEY CHECK (length(hash) = 32),
    account     text NOT NULL CHECK (account ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    device_id   text NOT NULL CHECK (device_id ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    serial      text
);
