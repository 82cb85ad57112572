-- Stripe billing: the objects `si stripe setup` made, the webhook event log,
-- each invoice's last known state, and a payment suspension kept apart from
-- the credit-ceiling one.

-- One row: the meter, product, metered price and webhook endpoint at Stripe
-- that this mesh uses. `si stripe setup` writes it; `si server` reads it.
CREATE TABLE stripe_setup (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    meter_id             text NOT NULL,
    meter_event          text NOT NULL,
    product_id           text NOT NULL,
    price_id             text NOT NULL,
    webhook_endpoint_id  text NOT NULL,
    webhook_url          text NOT NULL,
    webhook_secret       text NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Each account is subscribed to the metered price once; a handed-over
-- project's new owner gets one plan schedule however many handovers they take.
ALTER TABLE accounts ADD COLUMN stripe_usage_subscription text;
ALTER TABLE accounts ADD COLUMN stripe_plan_schedule text;

-- The payment suspension is its own flag. status and suspended_reason stay
-- what the ledger reads; while payment_suspended holds, the trigger keeps
-- the account suspended whatever else lifts a ceiling suspension, and a paid
-- invoice clears only this flag.
ALTER TABLE accounts ADD COLUMN payment_suspended boolean NOT NULL DEFAULT false;
UPDATE accounts SET payment_suspended = true WHERE suspended_reason = 'payment_failed';

CREATE FUNCTION accounts_payment_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payment_suspended THEN
        NEW.status := 'suspended';
        IF NEW.suspended_reason = '' THEN
            NEW.suspended_reason := 'payment_failed';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER accounts_payment_hold BEFORE INSERT OR UPDATE ON accounts
    FOR EACH ROW WHEN (NEW.payment_suspended) EXECUTE FUNCTION accounts_payment_hold();

-- Every webhook event received, once: a redelivery finds its id here and
-- changes nothing. outcome says what the event did.
CREATE TABLE stripe_events (
    event_id     text PRIMARY KEY,
    type         text NOT NULL,
    customer     text NOT NULL,
    invoice      text NOT NULL,
    created      timestamptz NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('applied', 'stale', 'unknown_customer')),
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_events_customer ON stripe_events (customer, created);

-- Each invoice's state as of its latest event (by Stripe's created time). paid
-- and voided are final: a payment_failed delivered after them is stale. An
-- account is payment-suspended while any of its invoices is failed.
CREATE TABLE stripe_invoices (
    invoice        text PRIMARY KEY,
    customer       text NOT NULL,
    state          text NOT NULL CHECK (state IN ('failed', 'paid', 'voided')),
    event_id       text NOT NULL,
    event_created  timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_invoices_failed ON stripe_invoices (customer) WHERE state = 'failed';
