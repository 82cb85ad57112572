-- The adapters loaded in each shared inference backend, so that the worker
-- replicas in front of one backend keep one least-recently-used set instead
-- of one each that evict each other's adapters. backend is the backend's
-- base URL; a row not ready is a load in progress, claimed at claimed_at.
CREATE TABLE lora_loaded (
    backend    text NOT NULL,
    adapter    text NOT NULL,
    ready      boolean NOT NULL DEFAULT false,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    last_used  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (backend, adapter)
);
