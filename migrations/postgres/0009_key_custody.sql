-- Where each signing key's private half lives: `local` (sealed in this table
-- under the master key), `pkcs11` (an object labelled {kid} in an HSM's
-- token) or `transit` (an OpenBao/Vault transit key named mayfly-{kid});
-- nothing private is stored here for the last two. A removed or revoked key is
-- destroyed where it lives; destroyed_at records when that was confirmed, so a
-- destruction the outside service did not answer is retried, never forgotten.
ALTER TABLE signing_keys ADD COLUMN custody TEXT NOT NULL DEFAULT 'local';
ALTER TABLE signing_keys ADD COLUMN destroyed_at TIMESTAMPTZ;
UPDATE signing_keys SET destroyed_at = COALESCE(removed_at, retired_at, created_at)
 WHERE state IN ('removed', 'revoked');

-- The master key wrapped by OpenBao/Vault transit (auto-unseal,
-- MAYFLY_MASTER_KEY_TRANSIT_KEY): one row, shared by every replica. Only
-- transit can unwrap it; the plaintext is never stored.
CREATE TABLE master_key_wraps (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    transit_key  TEXT NOT NULL,
    ciphertext   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    rewrapped_at TIMESTAMPTZ
);
