-- A resource URI, once registered, belongs to its tenant for good: deleting
-- the resource (or the tenant) leaves the claim, so no other tenant can ever
-- mint tokens with that `aud` while the old owner's MCP server still trusts it.
CREATE TABLE resource_uri_claims (
    canonical_uri TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    claimed_at    TIMESTAMPTZ NOT NULL
);
INSERT INTO resource_uri_claims (canonical_uri, tenant_id, claimed_at)
SELECT canonical_uri, tenant_id, created_at FROM resources;

-- resource_server clients: the canonical URIs whose tokens they may introspect
-- (NULL: every resource of their tenant).
ALTER TABLE clients ADD COLUMN serves JSONB;
-- An anchored pattern the `workload` (the token's `sub`) must match when minting.
ALTER TABLE clients ADD COLUMN workload_pattern TEXT;

-- Noisy-neighbour limits (NULL: no limit).
ALTER TABLE tenants ADD COLUMN max_live_leases BIGINT;
ALTER TABLE tenants ADD COLUMN max_mints_per_second BIGINT;
ALTER TABLE clients ADD COLUMN max_mints_per_second BIGINT;
-- Counting a tenant's live leases for its limit reads only the unexpired ones.
CREATE INDEX leases_tenant_expires_idx ON leases (tenant_id, expires_at);

-- Checkpoints of the audit chain, each MAC'd under a key derived from the
-- master key. Exported (`mayfly audit checkpoint`) and kept elsewhere, one
-- lets `mayfly audit verify --checkpoint` detect a rolled-back tail.
CREATE TABLE audit_checkpoints (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    count      BIGINT NOT NULL,
    head       TEXT NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    mac        TEXT NOT NULL
);
