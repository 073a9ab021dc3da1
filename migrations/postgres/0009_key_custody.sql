-- Where each signing key's private half lives: `local` (sealed in this table
-- under the master key), or `transit` (an OpenBao/Vault transit key named
-- mayfly-{kid}; nothing private is stored here). A removed or revoked key is
-- destroyed where it lives; destroyed_at records when that was confirmed, so a
-- destruction the outside service did not answer is retried, never forgotten.
ALTER TABLE signing_keys ADD COLUMN custody TEXT NOT NULL DEFAULT 'local';
ALTER TABLE signing_keys ADD COLUMN destroyed_at TIMESTAMPTZ;
UPDATE signing_keys SET destroyed_at = COALESCE(removed_at, retired_at, created_at)
 WHERE state IN ('removed', 'revoked');
