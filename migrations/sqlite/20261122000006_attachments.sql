-- Files sent with messages (001 multipart, 000 base64) or uploaded on their
-- own (000 /api/chat/files). The bytes live under <data_dir>/files, named by
-- their SHA-256; a file shared by several rows is removed with the last.

CREATE TABLE attachments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id          INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    message_id      INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    uploader_id     INTEGER REFERENCES users(id) ON DELETE SET NULL,
    -- The name the client gave, for Content-Disposition only; never a path.
    file_name       TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    size            INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    width           INTEGER,
    height          INTEGER,
    created_at      TEXT NOT NULL
);
CREATE INDEX attachments_message ON attachments (message_id);
CREATE INDEX attachments_conversation ON attachments (conversation_id);
CREATE INDEX attachments_sha256 ON attachments (sha256);
