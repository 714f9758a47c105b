-- Token revocation and webhook replay protection.

-- Bumped whenever a user's tokens must stop working (deactivation, a role or
-- password change); a token carries the generation it was issued under.
ALTER TABLE users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;

-- Incoming webhook deliveries already handled, by the sender's delivery id:
-- a redelivery (or a replay) answers the first outcome and changes nothing.
CREATE TABLE webhook_deliveries (
    org_id      BIGINT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    delivery_id TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, delivery_id)
);
