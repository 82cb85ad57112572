-- A bridge asks every second which of its hubs another bridge's sweep
-- marked lost (store.LostHubs); almost always none, so the index holds
-- almost nothing and the question costs a lookup, not the bridge's every
-- device id.
CREATE INDEX hubs_bridge_lost ON hubs (bridge_instance) WHERE bridge_lost_at IS NOT NULL;
