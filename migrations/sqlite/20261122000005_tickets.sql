-- Tickets (000's ticket from chat, 002's customer logs, 004's tickets) and
-- their categories. A ticket's messages are the messages of its
-- conversation: the chat it came from, or one opened with it.

CREATE TABLE categories (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX categories_org_name ON categories (org_id, lower(name));

CREATE TABLE tickets (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id          INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    conversation_id INTEGER NOT NULL UNIQUE REFERENCES conversations(id) ON DELETE CASCADE,
    -- Who the ticket is for: the customer of its conversation.
    customer_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title           TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    priority        TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high')),
    category_id     INTEGER REFERENCES categories(id) ON DELETE SET NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX tickets_org ON tickets (org_id, id);
CREATE INDEX tickets_customer ON tickets (customer_id, id);
