-- Channels (WhatsApp first): the durable inbox of verified webhook events,
-- the outbox state of channel messages, what a channel message carries and
-- the reactions customers put on messages.

-- One event of a verified webhook, written before the provider gets its
-- 200 and deleted once processed: a crash in between loses nothing, and
-- the next start finishes the work.
CREATE TABLE channel_inbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The `[[plugins]]` entry the event is for.
    entry      TEXT NOT NULL,
    -- The normalized event, as JSON (`channels::InboxEvent`).
    event      TEXT NOT NULL,
    -- Events of one lane (a business number and a customer) are processed
    -- in the order they arrived.
    lane       TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    -- Milliseconds since the epoch before which no worker takes the event:
    -- a worker's lease, or a failed attempt's backoff.
    due_ms     INTEGER NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX channel_inbox_due ON channel_inbox (due_ms, id);
CREATE INDEX channel_inbox_lane ON channel_inbox (lane, id);

-- What a channel message carries beyond its text (JSON: the content kind,
-- a location, the chosen button's id, a template to send...).
ALTER TABLE messages ADD COLUMN channel_data TEXT;
-- The outbox: a message with delivery 'pending' is waiting to be sent by
-- its channel entry; these say how often it was tried and when it may be
-- tried next (a worker's lease or a retry's backoff, epoch milliseconds).
ALTER TABLE messages ADD COLUMN send_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN send_due_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_outbox ON messages (send_due_ms, id) WHERE delivery = 'pending';

-- A customer's reaction on a message: one per customer and message, the
-- latest wins; taking it back deletes it.
CREATE TABLE message_reactions (
    message_id  INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    -- The channel identity that reacted (a `wa_id`).
    reactor     TEXT NOT NULL,
    emoji       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (message_id, reactor)
);
