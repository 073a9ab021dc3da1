-- People at the keyboard (issue 27): sign-in through a tenant's OIDC IdP,
-- the authorization code flow, and refresh-token families ("sessions").

-- A tenant's company IdP. The client secret is sealed under the master key.
CREATE TABLE login_providers (
    id                  BLOB PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    name                TEXT NOT NULL,
    issuer              TEXT NOT NULL,
    client_id           TEXT NOT NULL,
    sealed_secret       BLOB,
    scopes              TEXT NOT NULL,
    claims              TEXT NOT NULL,
    workload_template   TEXT NOT NULL,
    workflow            TEXT NOT NULL,
    grants              TEXT NOT NULL,
    max_ttl_seconds     INTEGER NOT NULL,
    refresh_ttl_seconds INTEGER NOT NULL,
    allow_registration  INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    CONSTRAINT login_providers_name_key UNIQUE (tenant_id, name)
);

-- One authorization request from /oauth2/authorize to the code's redemption.
-- `id` is the IdP leg's `state`; the browser that started it holds a cookie
-- whose digest is `browser_digest`. The code is stored as its digest.
CREATE TABLE authorizations (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    provider_id    BLOB NOT NULL,
    client_id      TEXT NOT NULL,
    client_name    TEXT,
    redirect_uri   TEXT NOT NULL,
    resource       TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    client_state   TEXT,
    code_challenge TEXT NOT NULL,
    browser_digest TEXT NOT NULL,
    idp_nonce      TEXT NOT NULL,
    idp_verifier   TEXT NOT NULL,
    person         TEXT,
    identity       TEXT,
    code_digest    TEXT UNIQUE,
    session_id     BLOB,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    used_at        TEXT
);
CREATE INDEX authorizations_expires_idx ON authorizations (expires_at);

-- A person's session with one MCP client: a refresh-token family. Its first
-- lease is the root of the chain every later access token hangs from.
CREATE TABLE sessions (
    id             BLOB PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    provider_id    BLOB NOT NULL,
    client_id      TEXT NOT NULL,
    client_name    TEXT,
    workload       TEXT NOT NULL,
    workflow       TEXT NOT NULL,
    resource       TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    identity       TEXT NOT NULL,
    jkt            TEXT,
    root_lease_id  BLOB,
    latest_lease_id BLOB,
    refreshes      INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    last_used_at   TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    revoked_at     TEXT,
    revoked_reason TEXT
);
CREATE INDEX sessions_tenant_idx ON sessions (tenant_id, created_at);
CREATE INDEX sessions_workload_idx ON sessions (tenant_id, workload);
CREATE INDEX sessions_client_idx ON sessions (tenant_id, client_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

-- Refresh tokens, by digest; each is spent once.
CREATE TABLE refresh_tokens (
    digest     TEXT PRIMARY KEY,
    session_id BLOB NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);

-- What a person agreed a client may have, so the consent page is shown once.
CREATE TABLE consents (
    tenant_id  TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    workload   TEXT NOT NULL,
    resource   TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, client_id, workload, resource)
);

-- Public clients registered through RFC 7591 (`POST /oauth2/register`).
-- Not bound to a tenant: a tenant's login provider decides whether they
-- may sign its people in (`allow_registration`).
CREATE TABLE registered_clients (
    client_id     TEXT PRIMARY KEY,
    client_name   TEXT,
    redirect_uris TEXT NOT NULL,
    source        TEXT,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT
);
CREATE INDEX registered_clients_created_idx ON registered_clients (created_at);

-- Interactive clients registered by a tenant admin (`kind: "interactive"`):
-- public clients with the redirect URIs they may be answered at.
ALTER TABLE clients ADD COLUMN redirect_uris TEXT;
