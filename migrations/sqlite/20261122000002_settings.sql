-- Values every gateway node must agree on, generated once by whichever node
-- starts first (the JWT signing secret when none is configured and the
-- database is shared).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
