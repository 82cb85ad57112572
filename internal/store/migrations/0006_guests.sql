-- Invites to a project and the guest sessions they open. Only a token's
-- SHA-256 is stored. A guest's usage is billed to the host's account and
-- taken from the session's remaining quota in the same transaction.
CREATE TABLE invites (
    id           text PRIMARY KEY,
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    project_id   text NOT NULL REFERENCES projects (id),
    host_id      text NOT NULL REFERENCES accounts (id),
    role         text NOT NULL CHECK (role IN ('editor', 'viewer')),
    quota        bigint NOT NULL CHECK (quota > 0),
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'accepted', 'revoked', 'expired')),
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz
);

CREATE TABLE guest_sessions (
    id           text PRIMARY KEY,
    invite_id    text UNIQUE REFERENCES invites (id),
    project_id   text NOT NULL REFERENCES projects (id),
    host_id      text NOT NULL REFERENCES accounts (id),
    role         text NOT NULL CHECK (role IN ('editor', 'viewer')),
    quota        bigint NOT NULL CHECK (quota > 0),
    remaining    bigint NOT NULL CHECK (remaining >= 0 AND remaining <= quota),
    created_at   timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE usage_events ADD FOREIGN KEY (guest_session) REFERENCES guest_sessions (id);
