-- The plugins' key-value store (wit/kv.wit): one namespace per [[plugins]] id.
CREATE TABLE plugin_kv (
    plugin_id  TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    value      BYTEA  NOT NULL,
    -- Unix milliseconds; NULL never expires.
    expires_at BIGINT,
    PRIMARY KEY (plugin_id, key)
);
