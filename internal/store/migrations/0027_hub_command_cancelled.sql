-- A request to a hub may be cancelled: before it reached the hub (nothing
-- ran) or while its command ran (the hub killed it).
ALTER TABLE hub_commands ADD COLUMN cancelled boolean NOT NULL DEFAULT false;
