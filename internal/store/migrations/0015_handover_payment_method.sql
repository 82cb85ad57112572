-- A handed-over project's new owner gives a payment method on a
-- Stripe-hosted page (Checkout in setup mode) before their plan starts.
-- Until Stripe says it was saved the handover waits in awaiting_payment:
-- the project is theirs, no plan subscription is made, and the host pays
-- what they paid before. awaiting_payment no longer holds the host's
-- project open: the copy is made, and the host may hand it over again.
ALTER TABLE handovers DROP CONSTRAINT handovers_state_check;
ALTER TABLE handovers ADD CONSTRAINT handovers_state_check
    CHECK (state IN ('pending', 'accepted', 'awaiting_payment', 'completed', 'declined', 'cancelled', 'expired', 'failed'));
ALTER TABLE handovers ADD COLUMN payment_saved_at timestamptz;

-- An account's customer saved a payment method through one of our pages
-- (the event that said so is in stripe_events): its later handovers do not
-- ask again.
ALTER TABLE accounts ADD COLUMN payment_method_at timestamptz;

-- The Checkout Sessions made for a handover, each bound to the customer it
-- was made for: a completed session counts only for that customer and
-- that handover.
CREATE TABLE handover_payment_sessions (
    session_id   text PRIMARY KEY,
    handover_id  text NOT NULL REFERENCES handovers (id),
    customer     text NOT NULL,
    url          text NOT NULL,
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX handover_payment_sessions_handover ON handover_payment_sessions (handover_id, created_at DESC);

-- Checkout events are logged beside invoice events (invoice holds the
-- session id); no_match: a completed session that is not a handover's.
ALTER TABLE stripe_events DROP CONSTRAINT stripe_events_outcome_check;
ALTER TABLE stripe_events ADD CONSTRAINT stripe_events_outcome_check
    CHECK (outcome IN ('applied', 'stale', 'unknown_customer', 'no_match'));
