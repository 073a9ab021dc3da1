-- A resource URI, once registered, belongs to its tenant for good: deleting
-- the resource (or the tenant) leaves the claim, so no other tenant can ever
-- mint tokens with that `aud` while the old owner's MCP server still trusts it.
CREATE TABLE resource_uri_claims (
    canonical_uri TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    claimed_at    TEXT NOT NULL
);
INSERT INTO resource_uri_claims (canonical_uri, tenant_id, claimed_at)
SELECT canonical_uri, tenant_id, created_at FROM resources;

-- resource_server clients: the canonical URIs whose tokens they may introspect
-- (NULL: every resource of their tenant).
ALTER TABLE clients ADD COLUMN serves TEXT;
-- An anchored pattern the `workload` (the token's `sub`) must match when minting.
ALTER TABLE clients ADD COLUMN workload_pattern TEXT;

-- Noisy-neighbour limits (NULL: no limit).
ALTER TABLE tenants ADD COLUMN max_live_leases INTEGER;
ALTER TABLE tenants ADD COLUMN max_mints_per_second INTEGER;
ALTER TABLE clients ADD COLUMN max_mints_per_second INTEGER;
-- Counting a tenant's live leases for its limit reads only the unexpired ones.
CREATE INDEX leases_tenant_expires_idx ON leases (tenant_id, expires_at);

-- Checkpoints of the audit chain, each MAC'd under a key derived from the
-- master key. Exported (`mayfly audit checkpoint`) and kept elsewhere, one
-- lets `mayfly audit verify --checkpoint` detect a rolled-back tail.
CREATE TABLE audit_checkpoints (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    count      INTEGER NOT NULL,
    head       TEXT NOT NULL,
    at         TEXT NOT NULL,
    mac        TEXT NOT NULL
);

-- Federation: trust policies let a tenant accept an external OIDC token (a CI
-- job's, a pod's, a person's) in place of a stored secret.
CREATE TABLE trust_policies (
    id                    BLOB PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    name                  TEXT NOT NULL,
    issuer                TEXT NOT NULL,
    audience              TEXT NOT NULL,
    subject               TEXT,
    subject_pattern       TEXT,
    claims                TEXT NOT NULL,
    max_token_age_seconds INTEGER,
    single_use            INTEGER NOT NULL,
    workflow_template     TEXT NOT NULL,
    workload_template     TEXT NOT NULL,
    grants                TEXT NOT NULL,
    max_ttl_seconds       INTEGER NOT NULL,
    owner                 TEXT,
    expires_at            TEXT,
    client_id             TEXT,
    actors                TEXT NOT NULL,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    CONSTRAINT trust_policies_name_key UNIQUE (tenant_id, name)
);
CREATE INDEX trust_policies_issuer_idx ON trust_policies (tenant_id, issuer);

-- Assertions seen once (single_use policies, client assertions), across replicas.
CREATE TABLE used_assertions (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX used_assertions_expires_idx ON used_assertions (expires_at);

-- Public keys a client authenticates with (private_key_jwt), as a JWK set.
ALTER TABLE clients ADD COLUMN jwks TEXT;
-- Who a federated token was issued to: {issuer, subject, jti, policy}.
ALTER TABLE leases ADD COLUMN federated TEXT;
ALTER TABLE leases ADD COLUMN policy_id BLOB;
CREATE INDEX leases_policy_idx ON leases (tenant_id, policy_id, seq);
-- The lease a delegated token was exchanged from.
ALTER TABLE leases ADD COLUMN parent_id BLOB;

-- Delegation: agents allowed to act for this client's tokens.
ALTER TABLE clients ADD COLUMN delegates TEXT;
-- The actors and ancestor leases of a delegated token, one row each (a chain
-- is at most five deep), so revoking an actor's workload or an ancestor lease
-- reaches it with a few indexed probes.
CREATE TABLE lease_links (
    lease_id  BLOB NOT NULL,
    actor     TEXT,
    ancestor  BLOB
);
CREATE INDEX lease_links_lease_idx ON lease_links (lease_id);
CREATE INDEX lease_links_actor_idx ON lease_links (actor);
CREATE INDEX lease_links_ancestor_idx ON lease_links (ancestor);
-- A single-lease rule's lease, as a UUID (its `value` holds the text form).
ALTER TABLE revocations ADD COLUMN lease_ref BLOB;
CREATE INDEX revocations_lease_ref_idx ON revocations (lease_ref);
