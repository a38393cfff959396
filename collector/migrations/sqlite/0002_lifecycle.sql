-- The data lifecycle: retention rules, suppression tombstones, the audit chain, deletion
-- jobs, and leases that keep several collectors from doing the same background work.

ALTER TABLE environments ADD COLUMN retention_days INTEGER;
ALTER TABLE environments ADD COLUMN retention_days_without_response INTEGER;

-- A tombstone per id of a deleted user: the keyed hash of the id, never the id itself, so
-- that messages still in flight cannot bring the user back.
CREATE TABLE suppressions (
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    id_hash        TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    PRIMARY KEY (environment_id, id_hash)
);

-- Every admin action and deletion, hash-chained. No foreign key: entries outlive the
-- environments they speak of. No personal data: ids appear only as keyed hashes.
CREATE TABLE audit_entries (
    seq            INTEGER PRIMARY KEY NOT NULL,
    environment_id TEXT,
    at             TEXT NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    request        TEXT NOT NULL,
    counts         TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);

-- Long deletions (a segment) run as jobs that any collector can pick up and resume.
CREATE TABLE jobs (
    environment_id   TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    id               TEXT NOT NULL,
    kind             TEXT NOT NULL,
    filter           TEXT NOT NULL,
    status           TEXT NOT NULL,
    total            INTEGER NOT NULL,
    done             INTEGER NOT NULL DEFAULT 0,
    counts           TEXT NOT NULL DEFAULT '{}',
    requested_by     TEXT NOT NULL,
    error            TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    PRIMARY KEY (environment_id, id)
);

-- Named leases: who may run a piece of background work until when, and when it last ran.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    last_run_at TEXT
);
