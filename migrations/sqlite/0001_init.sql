-- mayfly schema, SQLite flavour. Keep in step with migrations/postgres/0001_init.sql:
-- the same tables, columns and constraint names, so both backends behave alike.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    deleted_at  TEXT
);

CREATE TABLE resources (
    id                  BLOB PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    uri                 TEXT NOT NULL,
    canonical_uri       TEXT NOT NULL,
    name                TEXT NOT NULL,
    scopes              TEXT NOT NULL,
    default_ttl_seconds INTEGER NOT NULL,
    max_ttl_seconds     INTEGER NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    -- Globally unique: a tenant must never mint tokens for another tenant's MCP server.
    CONSTRAINT resources_uri_key UNIQUE (canonical_uri)
);

CREATE TABLE clients (
    client_id       TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    workflows       TEXT NOT NULL,
    grants          TEXT NOT NULL,
    max_ttl_seconds INTEGER NOT NULL,
    disabled        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    deleted_at      TEXT
);
CREATE INDEX clients_tenant_idx ON clients (tenant_id, client_id);

-- Only SHA-256 digests of client secrets are stored; the secret is shown once.
CREATE TABLE client_secrets (
    id          BLOB PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES clients (client_id),
    secret_hash BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT
);
CREATE INDEX client_secrets_client_idx ON client_secrets (client_id);

-- Private keys are sealed with AES-256-GCM under the master key; sealed_private
-- becomes NULL once the key is removed and its material destroyed.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    state          TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    sealed_private BLOB,
    master_key_id  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    -- When a `next` key is due to start signing.
    activates_at   TEXT,
    activated_at   TEXT,
    retired_at     TEXT,
    removed_at     TEXT
);

-- One row per issued token. seq is assigned by the database and orders leases
-- against revocation rules across replicas (never a replica's own clock).
CREATE TABLE leases (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            BLOB NOT NULL,
    tenant_id     TEXT NOT NULL,
    workflow      TEXT NOT NULL,
    workload      TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    actor         TEXT,
    resource      TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    kid           TEXT NOT NULL,
    issued_at     TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT,
    revocation_id BLOB,
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
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             BLOB NOT NULL,
    tenant_id      TEXT,
    kind           TEXT NOT NULL,
    value          TEXT NOT NULL,
    cutoff_seq     INTEGER NOT NULL,
    issued_before  TEXT NOT NULL,
    prune_after    TEXT NOT NULL,
    reason         TEXT NOT NULL,
    created_by     TEXT,
    created_at     TEXT NOT NULL,
    leases_revoked INTEGER NOT NULL DEFAULT 0,
    -- Set once every matching lease row has been marked (in the background).
    marked_at      TEXT,
    CONSTRAINT revocations_id_key UNIQUE (id)
);
CREATE INDEX revocations_match_idx ON revocations (tenant_id, kind, value, cutoff_seq);
CREATE INDEX revocations_unmarked_idx ON revocations (marked_at, seq);

-- Append-only, hash-chained audit log. audit_chain holds the head; updating it
-- first serialises writers so the chain never forks.
CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         BLOB NOT NULL,
    at         TEXT NOT NULL,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    reason     TEXT,
    tenant_id  TEXT,
    workflow   TEXT,
    workload   TEXT,
    client_id  TEXT,
    actor      TEXT,
    admin      TEXT,
    resource   TEXT,
    scopes     TEXT,
    lease_id   BLOB,
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
    count INTEGER NOT NULL
);
INSERT INTO audit_chain (id, head, count)
VALUES (1, '0000000000000000000000000000000000000000000000000000000000000000', 0);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
