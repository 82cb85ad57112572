-- When the account's subscription to the metered price started, by
-- Stripe's clock. Stripe invoices a meter event only from that moment, so a
-- flush's meter event is never timestamped before it.
ALTER TABLE accounts ADD COLUMN stripe_usage_subscription_start timestamptz;
