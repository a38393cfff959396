-- Ebb's first schema. Every table that holds user data keys on environment_id first, so
-- that a distributed PostgreSQL can shard by environment without a schema change.
-- Times are UTC RFC 3339 text with microseconds and a `Z`, so text order is time order.

CREATE TABLE instance_settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE environments (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE write_keys (
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    write_key      TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (environment_id, write_key)
);
CREATE UNIQUE INDEX write_keys_by_key ON write_keys (write_key);

-- Admin tokens are kept only as SHA-256 hashes. A NULL environment means every environment.
CREATE TABLE admin_tokens (
    id             TEXT PRIMARY KEY NOT NULL,
    token_hash     TEXT NOT NULL UNIQUE,
    environment_id TEXT REFERENCES environments (id) ON DELETE CASCADE,
    label          TEXT NOT NULL,
    created_at     TEXT NOT NULL
);

-- One person. `id` is Ebb's own key; `user_id` is the site's id once known.
CREATE TABLE users (
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    id             TEXT NOT NULL,
    user_id        TEXT,
    traits         TEXT NOT NULL DEFAULT '{}',
    first_seen     TEXT NOT NULL,
    last_seen      TEXT NOT NULL,
    PRIMARY KEY (environment_id, id)
);

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

-- Activity (track, page, screen, group, alias), keyed by the client's message id so that a
-- retried batch stores nothing twice.
CREATE TABLE events (
    environment_id TEXT NOT NULL,
    message_id     TEXT NOT NULL,
    user_key       TEXT NOT NULL,
    type           TEXT NOT NULL,
    event          TEXT,
    name           TEXT,
    properties     TEXT NOT NULL DEFAULT '{}',
    context        TEXT NOT NULL DEFAULT '{}',
    timestamp      TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    PRIMARY KEY (environment_id, message_id),
    FOREIGN KEY (environment_id, user_key) REFERENCES users (environment_id, id)
        ON DELETE CASCADE
);
CREATE INDEX events_by_user ON events (environment_id, user_key, timestamp);
