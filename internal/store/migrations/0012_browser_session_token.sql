-- A browser session ends with the API token it was opened with: revoking a
-- stolen token must not leave the thief a cookie that works for 7 days.
-- Sessions opened before this migration are not tied to their token, so
-- they are ended (their browsers sign in again).
ALTER TABLE browser_sessions ADD COLUMN token_hash bytea REFERENCES api_tokens (hash);
UPDATE browser_sessions SET revoked_at = now() WHERE revoked_at IS NULL;
