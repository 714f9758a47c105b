-- The assistant: knowledge documents and their passages, FAQs, customer
-- memories, the search indexes' generations, and what the assistant needs to
-- remember on conversations, messages and users.

-- A knowledge-base article (or a text stored through 003's /vectors).
CREATE TABLE kb_documents (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id     INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    url        TEXT,
    -- 003's `source` (`knowledge_base` unless the client said otherwise).
    source     TEXT NOT NULL DEFAULT 'knowledge_base',
    -- 003's `sourceId`: the client's own id for the text.
    source_id  TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX kb_documents_org ON kb_documents (org_id, id);

-- The passages a document is split into; search finds passages.
CREATE TABLE kb_passages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    document_id INTEGER NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    content     TEXT NOT NULL,
    -- The plugin that made `embedding` (little-endian f32s); NULL: not yet.
    embedder    TEXT,
    embedding   BLOB
);
CREATE INDEX kb_passages_document ON kb_passages (document_id, position);

CREATE TABLE faqs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id     INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    question   TEXT NOT NULL,
    answer     TEXT NOT NULL,
    category   TEXT NOT NULL DEFAULT 'general',
    view_count INTEGER NOT NULL DEFAULT 0,
    embedder   TEXT,
    embedding  BLOB,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX faqs_org_category ON faqs (org_id, category, id);

-- 003's memory engine: one value per (user, type, key).
CREATE TABLE memories (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id        INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    -- 003's `userId`: a user's id, or a channel's own customer reference.
    user_ref      TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('short_term', 'long_term')),
    key           TEXT NOT NULL,
    -- JSON.
    value         TEXT NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    last_accessed TEXT,
    -- Short-term memories expire; NULL never does.
    expires_at    TEXT
);
CREATE UNIQUE INDEX memories_identity ON memories (org_id, user_ref, kind, key);

-- Bumped in the transaction that changes a corpus; each search index records
-- the generation it holds, and start-up rebuilds an index that lags.
CREATE TABLE search_generations (
    corpus     TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);
INSERT INTO search_generations (corpus, generation) VALUES ('knowledge', 0), ('faq', 0);

-- Who answers: the assistant (`ai`), nobody yet (`waiting`: handed over,
-- waiting for an agent) or an agent (`agent`). The assistant is silent
-- unless `ai`.
ALTER TABLE conversations ADD COLUMN handling TEXT NOT NULL DEFAULT 'ai'
    CHECK (handling IN ('ai', 'waiting', 'agent'));
-- 003's client-chosen `sessionId`, when it is not one of ours.
ALTER TABLE conversations ADD COLUMN external_id TEXT;
-- 003's session context: the last intent and entities (JSON).
ALTER TABLE conversations ADD COLUMN context TEXT NOT NULL DEFAULT '{}';
-- Messages up to this id are before the last reset: not in the history window.
ALTER TABLE conversations ADD COLUMN history_from INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX conversations_external ON conversations (org_id, external_id)
    WHERE external_id IS NOT NULL;

-- What an assistant reply was based on: passage ids (JSON array), tokens and
-- the time it took.
ALTER TABLE messages ADD COLUMN sources TEXT NOT NULL DEFAULT '[]';
ALTER TABLE messages ADD COLUMN tokens_used INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN response_time_ms INTEGER NOT NULL DEFAULT 0;

-- A customer known only by a channel's reference (003 `userId` sent with an
-- API key): a user without a password.
ALTER TABLE users ADD COLUMN external_ref TEXT;
CREATE UNIQUE INDEX users_external_ref ON users (org_id, external_ref)
    WHERE external_ref IS NOT NULL;
