-- Bridge liveness: every bridge process writes its row about once a second
-- (last_beat, the database's clock). A hub whose registry row names a
-- bridge instance that has stopped beating (or stopped cleanly) is offline
-- at once for every reader, not only after its own heartbeat age, and the
-- surviving bridges mark it disconnected.
CREATE TABLE bridge_beats (
    instance    text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_beat   timestamptz NOT NULL DEFAULT now(),
    stopped     boolean NOT NULL DEFAULT false
);

-- The bridge process a hub's control stream is on (bridge_beats.instance);
-- NULL for a hub registered by a bridge that predates this. instance_at is
-- the connected_at of the registration that wrote bridge_instance and
-- features: a bridge that predates them (a rolling upgrade) sets
-- connected_at alone, and then neither counts.
ALTER TABLE hubs ADD COLUMN bridge_instance text;
ALTER TABLE hubs ADD COLUMN instance_at timestamptz;
-- When a surviving bridge marked the hub disconnected because its bridge
-- died (NULL otherwise); cleared when the hub connects again.
ALTER TABLE hubs ADD COLUMN bridge_lost_at timestamptz;
CREATE INDEX hubs_bridge_instance ON hubs (bridge_instance) WHERE connected;

-- What the hub's code does that an older hub's does not, from its hello
-- (hub/wire's Feature constants). Empty for an older hub.
ALTER TABLE hubs ADD COLUMN features text[] NOT NULL DEFAULT '{}';
