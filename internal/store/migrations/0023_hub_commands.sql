-- The cloud's audit of commands asked of hubs (si hub exec, HubCommandWorkflow):
-- who asked, for which account, what, and what came of it: refused (by the
-- cloud or by the hub's allow-list) or run, with its exit code and bytes.
-- One row per workflow; refused requests for unknown devices are kept too,
-- so device and account carry no foreign key.
CREATE TABLE hub_commands (
    id           text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 400),
    account      text NOT NULL CHECK (length(account) <= 100),
    device       text NOT NULL CHECK (length(device) <= 100),
    asked_by     text NOT NULL CHECK (length(asked_by) <= 200),
    command      text NOT NULL CHECK (length(command) <= 100),
    args         text[] NOT NULL DEFAULT '{}',
    exit_code    integer,
    bytes_out    bigint NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    truncated    boolean NOT NULL DEFAULT false,
    timed_out    boolean NOT NULL DEFAULT false,
    refused      text NOT NULL DEFAULT '' CHECK (length(refused) <= 1100),
    refused_by   text NOT NULL DEFAULT '' CHECK (refused_by IN ('', 'cloud', 'hub')),
    -- error: the hub did not answer (offline, or lost mid-run: the command may have run).
    error        text NOT NULL DEFAULT '' CHECK (length(error) <= 1100),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX hub_commands_device ON hub_commands (device, started_at DESC);
CREATE INDEX hub_commands_account ON hub_commands (account, started_at DESC);
