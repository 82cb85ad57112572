-- Projects get an owner and members with roles; adapters belong to an owner
-- and, optionally, a project whose members may use them too.
ALTER TABLE projects ADD COLUMN owner_id text REFERENCES accounts (id);

CREATE TABLE project_members (
    project_id  text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    account_id  text NOT NULL REFERENCES accounts (id),
    role        text NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, account_id)
);
CREATE INDEX project_members_account ON project_members (account_id);

CREATE TABLE loras (
    id              text PRIMARY KEY CHECK (id ~ '^lora_[a-z2-7]{26}$'),
    owner_id        text NOT NULL REFERENCES accounts (id),
    project_id      text REFERENCES projects (id),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    base_model      text NOT NULL,
    rank            integer NOT NULL CHECK (rank > 0),
    alpha           double precision NOT NULL,
    target_modules  text[] NOT NULL,
    config          jsonb NOT NULL,
    size_bytes      bigint NOT NULL CHECK (size_bytes > 0),
    sha256          text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    object_key      text NOT NULL UNIQUE,
    state           text NOT NULL CHECK (state IN ('registering', 'available', 'deleting')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    available_at    timestamptz,
    last_used_at    timestamptz,
    UNIQUE (owner_id, sha256)
);
CREATE INDEX loras_project ON loras (project_id) WHERE project_id IS NOT NULL;
