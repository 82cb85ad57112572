-- Flush ids come from a per-account sequence taken in the transaction that
-- reserves the cents, so a flush that is skipped consumes no id and no two
-- flushes share one. A flush whose outcome at Stripe is unknown is in_doubt:
-- it stays open (its cents stay in accounts.unbilled, where the credit
-- ceiling counts them) and is retried under its own identifier only.
ALTER TABLE accounts ADD COLUMN flush_seq bigint NOT NULL DEFAULT 0 CHECK (flush_seq >= 0);
UPDATE accounts a SET flush_seq = (SELECT count(*) FROM flushes f WHERE f.account_id = a.id);

ALTER TABLE flushes DROP CONSTRAINT flushes_state_check;
ALTER TABLE flushes ADD CONSTRAINT flushes_state_check CHECK (state IN ('pending', 'in_doubt', 'sent', 'failed'));
-- The first request that may have reached Stripe: Stripe keeps an identifier
-- unique for 24 hours from then, after which a flush still in doubt is
-- reconciled against Stripe before anything is sent again.
ALTER TABLE flushes ADD COLUMN first_attempt_at timestamptz;
-- The meter event's timestamp (whole seconds), the same on every retry.
ALTER TABLE flushes ADD COLUMN meter_at timestamptz;
UPDATE flushes SET meter_at = date_trunc('second', created_at);
ALTER TABLE flushes ALTER COLUMN meter_at SET NOT NULL;
ALTER TABLE flushes ALTER COLUMN meter_at SET DEFAULT date_trunc('second', now());

-- One open flush per account, pending or in doubt: a second would reserve
-- cents that may already be at Stripe.
DROP INDEX flushes_one_pending;
CREATE UNIQUE INDEX flushes_one_open ON flushes (account_id) WHERE state IN ('pending', 'in_doubt');
CREATE INDEX flushes_open ON flushes (state) WHERE state IN ('pending', 'in_doubt');
