-- Contacts and their channel identities; conversations record their
-- channel, channel entry and contact, and may have no login customer (a
-- ticket another system opened, a WhatsApp or email contact); messages
-- record what a channel needs (provider id, delivery state, the message
-- they reply to, subject, HTML).
--
-- Making `customer_id` nullable needs SQLite's table rebuild (create the
-- new table, copy, drop the old, rename). It relies on `Db::migrate`
-- running SQLite migrations with foreign keys off: with them on, dropping
-- the old table would cascade into messages and tickets.

-- People who write to an organization. A contact is not a login user:
-- the same email may be a contact of two organizations, and a contact may
-- exist before it ever logs in (`user_id` links the two when it does).
CREATE TABLE contacts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id     INTEGER UNIQUE REFERENCES users(id) ON DELETE SET NULL,
    name        TEXT,
    email       TEXT,
    phone       TEXT,
    avatar_url  TEXT,
    -- JSON object of the organization's own attributes.
    attributes  TEXT NOT NULL DEFAULT '{}',
    -- Set when this contact was merged into another (it is kept, empty,
    -- so old references resolve).
    merged_into INTEGER REFERENCES contacts(id) ON DELETE SET NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX contacts_org ON contacts (org_id, id);

-- How a contact is known on a channel: a web user id, a WhatsApp `wa_id`,
-- an email address, a client's external id (003 `userId`).
CREATE TABLE contact_identities (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id     INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('web', 'whatsapp', 'email', 'api')),
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX contact_identities_value ON contact_identities (org_id, kind, value);
CREATE INDEX contact_identities_contact ON contact_identities (contact_id);

-- Every customer user so far is a contact with a web identity (and an api
-- identity when a client named it).
INSERT INTO contacts (org_id, user_id, name, email, created_at, updated_at)
    SELECT org_id, id, full_name,
           CASE WHEN external_ref IS NULL THEN email END,
           created_at, created_at
    FROM users WHERE role = 'customer';
INSERT INTO contact_identities (org_id, contact_id, kind, value, created_at)
    SELECT org_id, id, 'web', CAST(user_id AS TEXT), created_at FROM contacts;
INSERT INTO contact_identities (org_id, contact_id, kind, value, created_at)
    SELECT c.org_id, c.id, 'api', u.external_ref, c.created_at
    FROM contacts c JOIN users u ON u.id = c.user_id
    WHERE u.external_ref IS NOT NULL;

CREATE TABLE conversations_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id        INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    -- The login customer, when there is one (001 `userId`).
    customer_id   INTEGER REFERENCES users(id) ON DELETE CASCADE,
    contact_id    INTEGER REFERENCES contacts(id) ON DELETE SET NULL,
    agent_id      INTEGER REFERENCES users(id) ON DELETE SET NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'resolved', 'closed', 'archived')),
    subject       TEXT,
    priority      TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high')),
    tags          TEXT NOT NULL DEFAULT '[]',
    -- `web`, `whatsapp`, `email` or `api` (the domain's enum; no CHECK, as
    -- for messages.delivery below).
    channel       TEXT NOT NULL DEFAULT 'web',
    -- The `[[plugins]]` entry a channel conversation came through.
    channel_entry TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    ended_at      TEXT,
    handling      TEXT NOT NULL DEFAULT 'ai' CHECK (handling IN ('ai', 'waiting', 'agent')),
    external_id   TEXT,
    context       TEXT NOT NULL DEFAULT '{}',
    history_from  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO conversations_new (id, org_id, customer_id, contact_id, agent_id, status, subject,
        priority, tags, channel, created_at, updated_at, ended_at, handling, external_id,
        context, history_from)
    SELECT v.id, v.org_id, v.customer_id,
           (SELECT c.id FROM contacts c WHERE c.user_id = v.customer_id),
           v.agent_id, v.status, v.subject, v.priority, v.tags,
           CASE WHEN v.channel IN ('web', 'whatsapp', 'email', 'api') THEN v.channel ELSE 'web' END,
           v.created_at, v.updated_at, v.ended_at, v.handling, v.external_id, v.context,
           v.history_from
    FROM conversations v;
DROP TABLE conversations;
ALTER TABLE conversations_new RENAME TO conversations;
CREATE INDEX conversations_org_status ON conversations (org_id, status, id);
CREATE INDEX conversations_customer ON conversations (customer_id, id);
CREATE INDEX conversations_contact ON conversations (contact_id, id);
CREATE UNIQUE INDEX conversations_external ON conversations (org_id, external_id)
    WHERE external_id IS NOT NULL;

CREATE TABLE tickets_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id          INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    conversation_id INTEGER NOT NULL UNIQUE REFERENCES conversations(id) ON DELETE CASCADE,
    -- The customer of its conversation; NULL for another system's ticket.
    customer_id     INTEGER REFERENCES users(id) ON DELETE CASCADE,
    title           TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    priority        TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high')),
    category_id     INTEGER REFERENCES categories(id) ON DELETE SET NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
INSERT INTO tickets_new SELECT id, org_id, conversation_id, customer_id, title, description,
        status, priority, category_id, created_at, updated_at FROM tickets;
DROP TABLE tickets;
ALTER TABLE tickets_new RENAME TO tickets;
CREATE INDEX tickets_org ON tickets (org_id, id);
CREATE INDEX tickets_customer ON tickets (customer_id, id);

-- What a channel message carries.
ALTER TABLE messages ADD COLUMN channel_entry TEXT;
ALTER TABLE messages ADD COLUMN provider_message_id TEXT;
-- `pending`, `sent`, `delivered`, `read` or `failed` (NULL off channels).
-- No CHECK here, unlike PostgreSQL: SQLite evaluates an IN list by building
-- a temporary table on every insert, which cost the message path a tenth
-- of its instructions (BENCHMARKS.md); the domain's enum guards the value.
ALTER TABLE messages ADD COLUMN delivery TEXT;
ALTER TABLE messages ADD COLUMN delivery_error TEXT;
ALTER TABLE messages ADD COLUMN reply_to_id INTEGER REFERENCES messages(id) ON DELETE SET NULL;
ALTER TABLE messages ADD COLUMN subject TEXT;
ALTER TABLE messages ADD COLUMN html TEXT;
CREATE UNIQUE INDEX messages_provider ON messages (channel_entry, provider_message_id)
    WHERE provider_message_id IS NOT NULL;

