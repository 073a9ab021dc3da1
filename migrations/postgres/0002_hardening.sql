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

-- Federation: trust policies let a tenant accept an external OIDC token (a CI
-- job's, a pod's, a person's) in place of a stored secret.
CREATE TABLE trust_policies (
    id                    UUID PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    name                  TEXT NOT NULL,
    issuer                TEXT NOT NULL,
    audience              TEXT NOT NULL,
    subject               TEXT,
    subject_pattern       TEXT,
    claims                JSONB NOT NULL,
    max_token_age_seconds BIGINT,
    single_use            BOOLEAN NOT NULL,
    workflow_template     TEXT NOT NULL,
    workload_template     TEXT NOT NULL,
    grants                JSONB NOT NULL,
    max_ttl_seconds       BIGINT NOT NULL,
    owner                 TEXT,
    expires_at            TIMESTAMPTZ,
    client_id             TEXT,
    actors                JSONB NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    CONSTRAINT trust_policies_name_key UNIQUE (tenant_id, name)
);
CREATE INDEX trust_policies_issuer_idx ON trust_policies (tenant_id, issuer);

-- Assertions seen once (single_use policies, client assertions), across replicas.
CREATE TABLE used_assertions (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX used_assertions_expires_idx ON used_assertions (expires_at);

-- Public keys a client authenticates with (private_key_jwt), as a JWK set.
ALTER TABLE clients ADD COLUMN jwks JSONB;
-- Who a federated token was issued to: {issuer, subject, jti, policy}.
ALTER TABLE leases ADD COLUMN federated JSONB;
ALTER TABLE leases ADD COLUMN policy_id UUID;
CREATE INDEX leases_policy_idx ON leases (tenant_id, policy_id, seq);
-- The lease a delegated token was exchanged from.
ALTER TABLE leases ADD COLUMN parent_id UUID;

-- Delegation: agents allowed to act for this client's tokens.
ALTER TABLE clients ADD COLUMN delegates JSONB;
-- The actors and ancestor leases of a delegated token, one row each (a chain
-- is at most five deep), so revoking an actor's workload or an ancestor lease
-- reaches it with a few indexed probes.
CREATE TABLE lease_links (
    lease_id  UUID NOT NULL,
    actor     TEXT,
    ancestor  UUID
);
CREATE INDEX lease_links_lease_idx ON lease_links (lease_id);
CREATE INDEX lease_links_actor_idx ON lease_links (actor);
CREATE INDEX lease_links_ancestor_idx ON lease_links (ancestor);
-- A single-lease rule's lease, as a UUID (its `value` holds the text form).
ALTER TABLE revocations ADD COLUMN lease_ref UUID;
CREATE INDEX revocations_lease_ref_idx ON revocations (lease_ref);
