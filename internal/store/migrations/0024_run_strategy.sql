-- The strategy a run answered with. Runs recorded before strategies were
-- debates.
ALTER TABLE consensus_runs ADD COLUMN strategy text NOT NULL DEFAULT 'debate'
    CHECK (strategy IN ('debate', 'vote', 'single'));
