-- Ebb's schema on PostgreSQL. Every table that holds user data keys on environment_id first,
-- so that a distributed PostgreSQL (Citus) can shard by environment without a schema
-- change; the SQLite schema in migrations/sqlite mirrors this one column for column.

CREATE TABLE instance_settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE environments (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL,
    -- Secret for identity verification (HMAC-SHA256 of the user id); NULL when off.
    identity_secret TEXT,
    -- JSON array of origins allowed to send from a browser; empty means any.
    allowed_origins JSONB NOT NULL DEFAULT '[]',
    -- Whether the client's IP address is kept in stored context.
    store_ip        BOOLEAN NOT NULL DEFAULT FALSE
);

-- Write keys are public, so they are kept as they are, to be shown again; ingest looks a
-- key up by its hex SHA-256, so no lookup compares the presented key with stored ones.
CREATE TABLE write_keys (
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    write_key      TEXT NOT NULL,
    key_hash       TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (environment_id, write_key)
);
CREATE UNIQUE INDEX write_keys_by_hash ON write_keys (key_hash);

-- Admin tokens are kept only as SHA-256 hashes. A NULL environment means every environment.
CREATE TABLE admin_tokens (
    id             TEXT PRIMARY KEY NOT NULL,
    token_hash     TEXT NOT NULL UNIQUE,
    environment_id TEXT REFERENCES environments (id) ON DELETE CASCADE,
    label          TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);

-- One person. `id` is Ebb's own key; `user_id` is the site's id once known.
CREATE TABLE users (
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    id             TEXT NOT NULL,
    user_id        TEXT,
    traits         JSONB NOT NULL DEFAULT '{}',
    -- The latest context.consent.categoryPreferences seen, and when it changed.
    consent        JSONB,
    consent_at     TIMESTAMPTZ,
    -- The latest Global Privacy Control signal seen (header or context); NULL if never.
    gpc            BOOLEAN,
    first_seen     TIMESTAMPTZ NOT NULL,
    last_seen      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (environment_id, id)
);
CREATE INDEX users_by_last_seen ON users (environment_id, last_seen);

-- Every id a user is known by: their user id and each anonymous id.
CREATE TABLE identities (
    environment_id TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('user', 'anonymous')),
    value          TEXT NOT NULL,
    user_key       TEXT NOT NULL,
    PRIMARY KEY (environment_id, kind, value),
    FOREIGN KEY (environment_id, user_key) REFERENCES users (environment_id, id)
        ON DELETE CASCADE
);
CREATE INDEX identities_by_user ON identities (environment_id, user_key);

-- Every message id accepted, of every type, so that a retried batch stores nothing twice;
-- with the user it was about, so that deleting the user deletes these rows too.
CREATE TABLE message_ids (
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    message_id     TEXT NOT NULL,
    user_key       TEXT NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (environment_id, message_id)
);
CREATE INDEX message_ids_by_user ON message_ids (environment_id, user_key);

-- Activity: track, page, screen, group, alias.
CREATE TABLE events (
    environment_id TEXT NOT NULL,
    message_id     TEXT NOT NULL,
    user_key       TEXT NOT NULL,
    type           TEXT NOT NULL,
    event          TEXT,
    name           TEXT,
    properties     JSONB NOT NULL DEFAULT '{}',
    context        JSONB NOT NULL DEFAULT '{}',
    timestamp      TIMESTAMPTZ NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (environment_id, message_id),
    FOREIGN KEY (environment_id, user_key) REFERENCES users (environment_id, id)
        ON DELETE CASCADE
);
CREATE INDEX events_by_user ON events (environment_id, user_key, timestamp);

-- Survey responses.
CREATE TABLE responses (
    environment_id TEXT NOT NULL,
    message_id     TEXT NOT NULL,
    user_key       TEXT NOT NULL,
    survey_id      TEXT NOT NULL,
    answers        JSONB NOT NULL,
    timestamp      TIMESTAMPTZ NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (environment_id, message_id),
    FOREIGN KEY (environment_id, user_key) REFERENCES users (environment_id, id)
        ON DELETE CASCADE
);
CREATE INDEX responses_by_user ON responses (environment_id, user_key);

-- Each change of a user's consent: the proof GDPR Art. 7(1) asks for.
CREATE TABLE consent_records (
    environment_id TEXT NOT NULL,
    id             TEXT NOT NULL,
    user_key       TEXT NOT NULL,
    preferences    JSONB NOT NULL,
    source         TEXT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (environment_id, id),
    FOREIGN KEY (environment_id, user_key) REFERENCES users (environment_id, id)
        ON DELETE CASCADE
);
CREATE INDEX consent_records_by_user ON consent_records (environment_id, user_key, recorded_at);
