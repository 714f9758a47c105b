-- The email channel: where each entry's IMAP listener is in its mailbox.

-- The mailbox's UIDVALIDITY and the last UID stored, per `[[plugins]]`
-- entry: a restart fetches from the next UID, so no mail is missed or
-- stored twice; a new UIDVALIDITY (the mailbox was rebuilt), or another
-- mailbox (`mailbox`: server, user and folder), starts over from the
-- unseen mail.
CREATE TABLE mail_cursors (
    entry        TEXT PRIMARY KEY,
    mailbox      TEXT NOT NULL,
    uid_validity BIGINT NOT NULL,
    last_uid     BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
