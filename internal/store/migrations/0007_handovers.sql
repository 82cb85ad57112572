-- Handovers: a project given to a new owner. HandoverWorkflow drives the
-- row; the snapshot lists what is handed over as it was when the handover
-- began.
CREATE TABLE handovers (
    id                        text PRIMARY KEY,
    project_id                text NOT NULL REFERENCES projects (id),
    host_id                   text NOT NULL REFERENCES accounts (id),
    recipient_email           text NOT NULL CHECK (length(recipient_email) BETWEEN 3 AND 254),
    state                     text NOT NULL DEFAULT 'pending'
                              CHECK (state IN ('pending', 'accepted', 'completed', 'declined', 'cancelled', 'expired', 'failed')),
    snapshot                  jsonb,
    new_owner_id              text REFERENCES accounts (id),
    new_project_id            text UNIQUE REFERENCES projects (id),
    subscription_schedule_id  text,
    reminders                 integer NOT NULL DEFAULT 0,
    failure                   text,
    created_at                timestamptz NOT NULL DEFAULT now(),
    expires_at                timestamptz NOT NULL,
    accepted_at               timestamptz,
    closed_at                 timestamptz
);
CREATE INDEX handovers_host ON handovers (host_id, created_at DESC);
-- One open handover per project at a time.
CREATE UNIQUE INDEX handovers_open ON handovers (project_id) WHERE state IN ('pending', 'accepted');

-- Each email of a handover is sent once: the row is written after the
-- message is handed to the SMTP server, and a retry that finds it skips.
CREATE TABLE handover_mails (
    handover_id  text NOT NULL REFERENCES handovers (id),
    kind         text NOT NULL,
    message_id   text NOT NULL,
    sent_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (handover_id, kind)
);

-- The accept links in a handover's emails. Each email carries a token of
-- its own (so no token is ever kept in plain text, not even in workflow
-- history); only their SHA-256 is stored, and all stop working when the
-- handover closes.
CREATE TABLE handover_tokens (
    token_hash   bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    handover_id  text NOT NULL REFERENCES handovers (id),
    created_at   timestamptz NOT NULL DEFAULT now()
);
