-- Projects group consensus runs (and, later, adapters and collaborators).
CREATE TABLE projects (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per ConsensusWorkflow, written when it finishes; Temporal keeps the
-- full history, this table keeps what dashboards and `si` list quickly.
CREATE TABLE consensus_runs (
    workflow_id  text PRIMARY KEY,
    project_id   text NOT NULL REFERENCES projects (id),
    prompt       text NOT NULL,
    status       text NOT NULL CHECK (status IN ('consensus', 'arbiter_resolved', 'failed')),
    score        double precision NOT NULL,
    rounds       integer NOT NULL CHECK (rounds >= 0),
    answer       text NOT NULL,
    placement    text NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consensus_runs_project ON consensus_runs (project_id, finished_at DESC);
