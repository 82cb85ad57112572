-- API tokens: only their SHA-256 is stored; the token is shown once.
CREATE TABLE api_tokens (
    hash        bytea PRIMARY KEY,
    account_id  text NOT NULL REFERENCES accounts (id),
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_tokens_account ON api_tokens (account_id);
