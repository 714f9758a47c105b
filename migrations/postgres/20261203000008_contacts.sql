-- Contacts and their channel identities; conversations record their
-- channel, channel entry and contact, and may have no login customer (a
-- ticket another system opened, a WhatsApp or email contact); messages
-- record what a channel needs (provider id, delivery state, the message
-- they reply to, subject, HTML).

-- People who write to an organization. A contact is not a login user:
-- the same email may be a contact of two organizations, and a contact may
-- exist before it ever logs in (`user_id` links the two when it does).
CREATE TABLE contacts (
    id          BIGSERIAL PRIMARY KEY,
    org_id      BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id     BIGINT UNIQUE REFERENCES users(id) ON DELETE SET NULL,
    name        TEXT,
    email       TEXT,
    phone       TEXT,
    avatar_url  TEXT,
    -- JSON object of the organization's own attributes.
    attributes  TEXT NOT NULL DEFAULT '{}',
    -- Set when this contact was merged into another (it is kept, empty,
    -- so old references resolve).
    merged_into BIGINT REFERENCES contacts(id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX contacts_org ON contacts (org_id, id);

-- How a contact is known on a channel: a web user id, a WhatsApp `wa_id`,
-- an email address, a client's external id (003 `userId`).
CREATE TABLE contact_identities (
    id         BIGSERIAL PRIMARY KEY,
    org_id     BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    contact_id BIGINT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('web', 'whatsapp', 'email', 'api')),
    value      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
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
    SELECT org_id, id, 'web', user_id::TEXT, created_at FROM contacts;
INSERT INTO contact_identities (org_id, contact_id, kind, value, created_at)
    SELECT c.org_id, c.id, 'api', u.external_ref, c.created_at
    FROM contacts c JOIN users u ON u.id = c.user_id
    WHERE u.external_ref IS NOT NULL;

ALTER TABLE conversations ALTER COLUMN customer_id DROP NOT NULL;
ALTER TABLE conversations ADD COLUMN contact_id BIGINT REFERENCES contacts(id) ON DELETE SET NULL;
ALTER TABLE conversations ADD COLUMN channel_entry TEXT;
UPDATE conversations v SET contact_id = c.id FROM contacts c WHERE c.user_id = v.customer_id;
UPDATE conversations SET channel = 'web' WHERE channel NOT IN ('web', 'whatsapp', 'email', 'api');
ALTER TABLE conversations ADD CONSTRAINT conversations_channel
    CHECK (channel IN ('web', 'whatsapp', 'email', 'api'));
CREATE INDEX conversations_contact ON conversations (contact_id, id);

ALTER TABLE tickets ALTER COLUMN customer_id DROP NOT NULL;

-- What a channel message carries.
ALTER TABLE messages ADD COLUMN channel_entry TEXT;
ALTER TABLE messages ADD COLUMN provider_message_id TEXT;
ALTER TABLE messages ADD COLUMN delivery TEXT
    CHECK (delivery IN ('pending', 'sent', 'delivered', 'read', 'failed'));
ALTER TABLE messages ADD COLUMN delivery_error TEXT;
ALTER TABLE messages ADD COLUMN reply_to_id BIGINT REFERENCES messages(id) ON DELETE SET NULL;
ALTER TABLE messages ADD COLUMN subject TEXT;
ALTER TABLE messages ADD COLUMN html TEXT;
CREATE UNIQUE INDEX messages_provider ON messages (channel_entry, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
