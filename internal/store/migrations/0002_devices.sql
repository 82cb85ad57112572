-- Devices enrolled with the mesh CA, their certificates, and the bridge's
-- view of each hub.
CREATE TABLE devices (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    account     text NOT NULL CHECK (account ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE device_certs (
    serial      text PRIMARY KEY,
    device_id   text NOT NULL REFERENCES devices (id),
    not_after   timestamptz NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX device_certs_device ON device_certs (device_id);

CREATE TABLE hubs (
    device_id      text PRIMARY KEY REFERENCES devices (id),
    version        text NOT NULL DEFAULT '',
    hostname       text NOT NULL DEFAULT '',
    bridge         text NOT NULL DEFAULT '',
    connected      boolean NOT NULL DEFAULT false,
    connected_at   timestamptz,
    last_seen      timestamptz NOT NULL DEFAULT now(),
    rtt_micros     integer NOT NULL DEFAULT 0,
    gpu_count      integer NOT NULL DEFAULT 0,
    gpu_load       double precision NOT NULL DEFAULT 0,  -- highest GPU utilization, 0..1
    gpu_temp_c     double precision NOT NULL DEFAULT 0,  -- hottest GPU
    cpu_load       double precision NOT NULL DEFAULT 0,
    nvml           boolean NOT NULL DEFAULT false,
    vitals         jsonb NOT NULL DEFAULT '{}',
    reconnects     integer NOT NULL DEFAULT 0
);

-- Usage a hub served locally, delivered over the tunnel; the event id is the
-- hub's own, so a record delivered twice is stored once.
CREATE TABLE hub_usage (
    event_id           text PRIMARY KEY,
    device_id          text NOT NULL REFERENCES devices (id),
    project            text NOT NULL,
    model              text NOT NULL,
    prompt_tokens      integer NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens  integer NOT NULL CHECK (completion_tokens >= 0),
    served_at          timestamptz NOT NULL,
    received_at        timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE consensus_runs ADD COLUMN account text NOT NULL DEFAULT '';
