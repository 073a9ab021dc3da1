-- mayfly schema, Postgres flavour. Keep in step with migrations/sqlite/0001_init.sql:
-- the same tables, columns and constraint names, so both backends behave alike.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    deleted_at  TIMESTAMPTZ
);

CREATE TABLE resources (
    id                  UUID PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    uri                 TEXT NOT NULL,
    canonical_uri       TEXT NOT NULL,
    name                TEXT NOT NULL,
    scopes              JSONB NOT NULL,
    default_ttl_seconds BIGINT NOT NULL,
    max_ttl_seconds     BIGINT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    -- Globally unique: a tenant must never mint tokens for another tenant's MCP server.
    CONSTRAINT resources_uri_key UNIQUE (canonical_uri)
);

CREATE TABLE clients (
    client_id       TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    workflows       JSONB NOT NULL,
    grants          JSONB NOT NULL,
    max_ttl_seconds BIGINT NOT NULL,
    disabled        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    deleted_at      TIMESTAMPTZ
);
CREATE INDEX clients_tenant_idx ON clients (tenant_id, client_id);

-- Only SHA-256 digests of client secrets are stored; the secret is shown once.
CREATE TABLE client_secrets (
    id          UUID PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES clients (client_id),
    secret_hash BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ
);
CREATE INDEX client_secrets_client_idx ON client_secrets (client_id);

-- Private keys are sealed with AES-256-GCM under the master key; sealed_private
-- becomes NULL once the key is removed and its material destroyed.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    state          TEXT NOT NULL,
    public_jwk     JSONB NOT NULL,
    sealed_private BYTEA,
    master_key_id  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    -- When a `next` key is due to start signing.
    activates_at   TIMESTAMPTZ,
    activated_at   TIMESTAMPTZ,
    retired_at     TIMESTAMPTZ,
    removed_at     TIMESTAMPTZ
);

-- One row per issued token. seq is assigned by the database and orders leases
-- against revocation rules across replicas (never a replica's own clock).
CREATE TABLE leases (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            UUID NOT NULL,
    tenant_id     TEXT NOT NULL,
    workflow      TEXT NOT NULL,
    workload      TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    actor         JSONB,
    resource      TEXT NOT NULL,
    scopes        JSONB NOT NULL,
    kid           TEXT NOT NULL,
    issued_at     TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    revocation_id UUID,
    source        TEXT,
    request_id    TEXT,
    CONSTRAINT leases_id_key UNIQUE (id)
);
CREATE INDEX leases_tenant_idx ON leases (tenant_id, seq);
CREATE INDEX leases_workflow_idx ON leases (tenant_id, workflow, seq);
CREATE INDEX leases_workload_idx ON leases (tenant_id, workload, seq);
CREATE INDEX leases_client_idx ON leases (client_id, seq);
CREATE INDEX leases_kid_idx ON leases (kid, seq);
CREATE INDEX leases_expires_idx ON leases (expires_at);

-- A revocation is a rule: every lease of the tenant matching (kind, value) whose
-- seq is <= cutoff_seq is revoked. Key rules have no tenant.
CREATE TABLE revocations (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             UUID NOT NULL,
    tenant_id      TEXT,
    kind           TEXT NOT NULL,
    value          TEXT NOT NULL,
    cutoff_seq     BIGINT NOT NULL,
    issued_before  TIMESTAMPTZ NOT NULL,
    prune_after    TIMESTAMPTZ NOT NULL,
    reason         TEXT NOT NULL,
    created_by     JSONB,
    created_at     TIMESTAMPTZ NOT NULL,
    leases_revoked BIGINT NOT NULL DEFAULT 0,
    -- Set once every matching lease row has been marked (in the background).
    marked_at      TIMESTAMPTZ,
    CONSTRAINT revocations_id_key UNIQUE (id)
);
CREATE INDEX revocations_match_idx ON revocations (tenant_id, kind, value, cutoff_seq);
CREATE INDEX revocations_unmarked_idx ON revocations (marked_at, seq);

-- Append-only, hash-chained audit log. audit_chain holds the head; updating it
-- first serialises writers so the chain never forks.
CREATE TABLE audit_events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         UUID NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    reason     TEXT,
    tenant_id  TEXT,
    workflow   TEXT,
    workload   TEXT,
    client_id  TEXT,
    actor      JSONB,
    admin      JSONB,
    resource   TEXT,
    scopes     JSONB,
    lease_id   UUID,
    request_id TEXT,
    source     TEXT,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    CONSTRAINT audit_events_id_key UNIQUE (id)
);
CREATE INDEX audit_events_tenant_idx ON audit_events (tenant_id, seq);

CREATE TABLE audit_chain (
    id    INTEGER PRIMARY KEY,
    head  TEXT NOT NULL,
    count BIGINT NOT NULL
);
INSERT INTO audit_chain (id, head, count)
VALUES (1, '0000000000000000000000000000000000000000000000000000000000000000', 0);

CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
