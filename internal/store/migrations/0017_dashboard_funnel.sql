-- The account dashboard: a short history of each hub's vitals, and the
-- conversion funnel's steps as times set once.

-- One reading per hub per minute at most (SaveHeartbeats samples), kept
-- for VitalsRetention and pruned by the same writer.
CREATE TABLE hub_vitals (
    device_id   text NOT NULL REFERENCES devices (id),
    at          timestamptz NOT NULL,
    gpu_load    double precision NOT NULL,
    gpu_temp_c  double precision NOT NULL,
    cpu_load    double precision NOT NULL,
    rtt_micros  integer NOT NULL,
    PRIMARY KEY (device_id, at)
);
CREATE INDEX hub_vitals_at ON hub_vitals (at);

-- Funnel: invites sent (created_at) -> opened -> accepted -> the guest's
-- first run; handovers started (created_at) -> opened -> accepted -> the
-- new owner's first paid invoice. Each time is set once and never cleared,
-- whatever the row's state becomes later, so the counts never go down. A
-- later step implies the earlier ones (accepting from the CLI opens too).
ALTER TABLE invites ADD COLUMN opened_at timestamptz;
ALTER TABLE invites ADD COLUMN accepted_at timestamptz;
ALTER TABLE invites ADD COLUMN first_run_at timestamptz;
ALTER TABLE handovers ADD COLUMN opened_at timestamptz;
ALTER TABLE handovers ADD COLUMN first_paid_at timestamptz;

UPDATE invites SET accepted_at = closed_at, opened_at = closed_at WHERE state = 'accepted';
UPDATE invites i SET first_run_at = r.at FROM (
    SELECT g.invite_id, min(u.created_at) AS at FROM usage_events u JOIN guest_sessions g ON g.id = u.guest_session
    WHERE g.invite_id IS NOT NULL GROUP BY g.invite_id) r
WHERE r.invite_id = i.id;
UPDATE handovers SET opened_at = accepted_at WHERE accepted_at IS NOT NULL;

CREATE FUNCTION invites_funnel_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.opened_at := coalesce(OLD.opened_at, NEW.opened_at);
    NEW.accepted_at := coalesce(OLD.accepted_at, NEW.accepted_at);
    NEW.first_run_at := coalesce(OLD.first_run_at, NEW.first_run_at);
    IF NEW.state = 'accepted' AND NEW.accepted_at IS NULL THEN
        NEW.accepted_at := now();
    END IF;
    IF NEW.first_run_at IS NOT NULL AND NEW.accepted_at IS NULL THEN
        NEW.accepted_at := NEW.first_run_at;
    END IF;
    IF NEW.accepted_at IS NOT NULL AND NEW.opened_at IS NULL THEN
        NEW.opened_at := NEW.accepted_at;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER invites_funnel_once BEFORE UPDATE ON invites
    FOR EACH ROW EXECUTE FUNCTION invites_funnel_once();

CREATE FUNCTION handovers_funnel_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.opened_at := coalesce(OLD.opened_at, NEW.opened_at);
    NEW.accepted_at := coalesce(OLD.accepted_at, NEW.accepted_at);
    NEW.first_paid_at := coalesce(OLD.first_paid_at, NEW.first_paid_at);
    IF NEW.accepted_at IS NOT NULL AND NEW.opened_at IS NULL THEN
        NEW.opened_at := NEW.accepted_at;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER handovers_funnel_once BEFORE UPDATE ON handovers
    FOR EACH ROW EXECUTE FUNCTION handovers_funnel_once();

-- A guest's first charged call is their first run.
CREATE FUNCTION usage_events_first_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE invites SET first_run_at = NEW.created_at
    WHERE id = (SELECT invite_id FROM guest_sessions WHERE id = NEW.guest_session) AND first_run_at IS NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER usage_events_first_run AFTER INSERT ON usage_events
    FOR EACH ROW WHEN (NEW.guest_session IS NOT NULL) EXECUTE FUNCTION usage_events_first_run();

-- A paid invoice of a handover's new owner is the handover's first paid
-- one if none was paid since it was accepted and the invoice's event came
-- after the acceptance (an invoice from before, delivered late, is no
-- conversion). The handover counts while it is accepted, awaits the new
-- owner's payment method (0015) or is completed; one that failed while
-- copying gave them nothing, and does not count.
CREATE FUNCTION stripe_invoices_first_paid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE handovers h SET first_paid_at = NEW.event_created
    FROM accounts a
    WHERE a.stripe_customer_id = NEW.customer AND h.new_owner_id = a.id
        AND h.accepted_at IS NOT NULL AND NEW.event_created >= h.accepted_at AND h.first_paid_at IS NULL
        AND h.state IN ('accepted', 'awaiting_payment', 'completed');
    RETURN NULL;
END
$$;
CREATE TRIGGER stripe_invoices_first_paid AFTER INSERT OR UPDATE ON stripe_invoices
    FOR EACH ROW WHEN (NEW.state = 'paid') EXECUTE FUNCTION stripe_invoices_first_paid();
