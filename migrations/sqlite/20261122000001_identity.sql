-- Identity: organizations (tenants), users and API keys.
--
-- Every later table (conversations, messages, attachments, tickets, categories,
-- FAQs, knowledge, memories, events) hangs off organizations(id) and, where a
-- person is involved, users(id). Ids are 64-bit integers because dialect 002
-- shows them as JSON numbers; the other dialects show the same value as a
-- string. Timestamps are UTC.

CREATE TABLE organizations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id        INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    -- Optional: users created by an admin may log in by email only.
    username      TEXT,
    -- Stored lower-cased; unique across organizations because login names no
    -- organization.
    email         TEXT NOT NULL UNIQUE,
    full_name     TEXT,
    -- Argon2id PHC string.
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'agent', 'customer')),
    is_active     INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    last_login_at TEXT
);
-- Usernames are unique regardless of case, so "Alice" cannot pose as "alice".
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));
CREATE INDEX users_org_role ON users (org_id, role);

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    -- The first characters of the key, for listings; the key itself is never stored.
    prefix       TEXT NOT NULL,
    -- SHA-256 of the key, hex. Keys carry 192 bits of randomness, so a fast
    -- hash is enough and keeps the per-request lookup a single index probe.
    key_hash     TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_keys_org ON api_keys (org_id);
