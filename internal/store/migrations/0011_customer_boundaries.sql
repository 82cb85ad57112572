-- The customer plane's boundaries.
--
-- Guest sessions: the row id becomes a non-secret handle (shown to the
-- host and the project's editors, carried by workflows and usage rows);
-- the guest holds a separate secret of which only the SHA-256 is kept.
-- Sessions expire and can be revoked. A session opened before this
-- migration had its id as its secret, and that id was shown to editors and
-- written into workflow histories: those sessions are revoked.
ALTER TABLE guest_sessions
    ADD COLUMN secret_hash bytea UNIQUE CHECK (length(secret_hash) = 32),
    ADD COLUMN expires_at  timestamptz,
    ADD COLUMN revoked_at  timestamptz;
UPDATE guest_sessions SET revoked_at = now() WHERE secret_hash IS NULL;
UPDATE guest_sessions SET expires_at = created_at + interval '30 days' WHERE expires_at IS NULL;
ALTER TABLE guest_sessions ALTER COLUMN expires_at SET NOT NULL;
ALTER TABLE guest_sessions ADD CONSTRAINT guest_sessions_secret
    CHECK (secret_hash IS NOT NULL OR revoked_at IS NOT NULL);

-- Browser sessions: the cookie holds an opaque random id, of which only the
-- SHA-256 is kept; sign-out revokes it.
CREATE TABLE browser_sessions (
    hash        bytea PRIMARY KEY CHECK (length(hash) = 32),
    account_id  text NOT NULL REFERENCES accounts (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX browser_sessions_account ON browser_sessions (account_id);

-- The default project is each account's own scratch space and never
-- anyone's to own or share: whoever adopted it loses it, and its pending
-- invites are revoked.
UPDATE invites SET state = 'revoked', closed_at = now() WHERE project_id = 'default' AND state = 'pending';
DELETE FROM project_members WHERE project_id = 'default';
UPDATE projects SET owner_id = NULL WHERE id = 'default';

-- A project left without an owner (created by a run before projects had
-- owners) is no longer adopted by whoever touches it first. One whose runs
-- all belong to a single account goes to that account; any other stays
-- ownerless until an operator assigns it.
WITH sole AS (
    SELECT r.project_id, min(r.account) AS account
    FROM consensus_runs r JOIN projects p ON p.id = r.project_id
    WHERE p.owner_id IS NULL AND p.id <> 'default' AND r.account <> ''
    GROUP BY r.project_id HAVING count(DISTINCT r.account) = 1
), owned AS (
    UPDATE projects p SET owner_id = sole.account FROM sole
    WHERE p.id = sole.project_id AND EXISTS (SELECT 1 FROM accounts a WHERE a.id = sole.account)
    RETURNING p.id, p.owner_id
)
INSERT INTO project_members (project_id, account_id, role)
SELECT id, owner_id, 'owner' FROM owned
ON CONFLICT (project_id, account_id) DO UPDATE SET role = 'owner';

-- A handover's accept is answered once: the request that recorded it is
-- kept, so a retry of that request (an activity retry) succeeds again and
-- any other accept is refused.
ALTER TABLE handovers ADD COLUMN accept_request text;
