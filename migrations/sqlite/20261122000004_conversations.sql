-- Conversations (000/001 chat sessions, 002 conversations, 003 sessions),
-- their messages and files, tickets and their categories: one set of tables
-- under every dialect.

CREATE TABLE conversations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    -- The customer the conversation is with (001 `userId`).
    customer_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- The agent it is assigned to (001 `agentId`).
    agent_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'resolved', 'closed', 'archived')),
    subject     TEXT,
    priority    TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high')),
    -- JSON array of strings.
    tags        TEXT NOT NULL DEFAULT '[]',
    channel     TEXT NOT NULL DEFAULT 'web',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    ended_at    TEXT
);
CREATE INDEX conversations_org_status ON conversations (org_id, status, id);
CREATE INDEX conversations_customer ON conversations (customer_id, id);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id          INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    sender_kind     TEXT NOT NULL CHECK (sender_kind IN ('customer', 'assistant', 'agent', 'system')),
    -- The user who wrote it; NULL for the assistant and the system.
    sender_id       INTEGER REFERENCES users(id) ON DELETE SET NULL,
    content         TEXT NOT NULL,
    -- 004's internal notes: never shown to customers nor sent to a channel.
    is_internal     INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL DEFAULT 'sent'
                    CHECK (status IN ('sending', 'sent', 'delivered', 'read', 'failed')),
    -- When the other side marked it read (001 read receipts).
    read_at         TEXT,
    -- The client's Idempotency-Key (or message id): a retried send returns
    -- the first message instead of writing a second.
    idempotency_key TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE UNIQUE INDEX messages_idempotency ON messages (conversation_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
