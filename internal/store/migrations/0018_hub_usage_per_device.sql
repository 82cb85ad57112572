-- A hub's usage event id is its own (its kernel numbers its calls): two
-- devices may use the same one, so a record is unique per device, not
-- across devices. Before this, another device sending an id first kept
-- this device's record out of hub_usage (the ledger, keyed
-- hub/<device>/<id>, was not affected).
ALTER TABLE hub_usage DROP CONSTRAINT hub_usage_pkey;
ALTER TABLE hub_usage ADD PRIMARY KEY (device_id, event_id);
