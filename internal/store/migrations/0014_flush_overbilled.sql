-- What Stripe holds of a flush beyond the flush itself and refused to
-- cancel (a duplicate copy older than Stripe's adjustment window): the
-- customer was charged that much more, for an operator to credit back.
ALTER TABLE flushes ADD COLUMN overbilled_cents bigint NOT NULL DEFAULT 0 CHECK (overbilled_cents >= 0);
