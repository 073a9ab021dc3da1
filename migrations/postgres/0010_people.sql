-- People at the keyboard (issue 27): sign-in through a tenant's OIDC IdP,
-- the authorization code flow, and refresh-token families ("sessions").

-- A tenant's company IdP. The client secret is sealed under the master key.
CREATE TABLE login_providers (
    id                  UUID PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    name                TEXT NOT NULL,
    issuer              TEXT NOT NULL,
    client_id           TEXT NOT NULL,
    sealed_secret       BYTEA,
    scopes              JSONB NOT NULL,
    claims              JSONB NOT NULL,
    workload_template   TEXT NOT NULL,
    workflow            TEXT NOT NULL,
    grants              JSONB NOT NULL,
    max_ttl_seconds     BIGINT NOT NULL,
    refresh_ttl_seconds BIGINT NOT NULL,
    allow_registration  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    CONSTRAINT login_providers_name_key UNIQUE (tenant_id, name)
);

-- One authorization request from /oauth2/authorize to the code's redemption.
-- `id` is the IdP leg's `state`; the browser that started it holds a cookie
-- whose digest is `browser_digest`. The code is stored as its digest.
CREATE TABLE authorizations (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    provider_id    UUID NOT NULL,
    client_id      TEXT NOT NULL,
    client_name    TEXT,
    redirect_uri   TEXT NOT NULL,
    resource       TEXT NOT NULL,
    scopes         JSONB NOT NULL,
    client_state   TEXT,
    code_challenge TEXT NOT NULL,
    browser_digest TEXT NOT NULL,
    idp_nonce      TEXT NOT NULL,
    idp_verifier   TEXT NOT NULL,
    person         TEXT,
    identity       JSONB,
    code_digest    TEXT UNIQUE,
    session_id     UUID,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    used_at        TIMESTAMPTZ
);
CREATE INDEX authorizations_expires_idx ON authorizations (expires_at);

-- A person's session with one MCP client: a refresh-token family. Its first
-- lease is the root of the chain every later access token hangs from.
CREATE TABLE sessions (
    id             UUID PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    provider_id    UUID NOT NULL,
    client_id      TEXT NOT NULL,
    client_name    TEXT,
    workload       TEXT NOT NULL,
    workflow       TEXT NOT NULL,
    resource       TEXT NOT NULL,
    scopes         JSONB NOT NULL,
    identity       JSONB NOT NULL,
    jkt            TEXT,
    root_lease_id  UUID,
    latest_lease_id UUID,
    refreshes      BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL,
    last_used_at   TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ,
    revoked_reason TEXT
);
CREATE INDEX sessions_tenant_idx ON sessions (tenant_id, created_at);
CREATE INDEX sessions_workload_idx ON sessions (tenant_id, workload);
CREATE INDEX sessions_client_idx ON sessions (tenant_id, client_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

-- Refresh tokens, by digest; each is spent once.
CREATE TABLE refresh_tokens (
    digest     TEXT PRIMARY KEY,
    session_id UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);

-- What a person agreed a client may have, so the consent page is shown once.
CREATE TABLE consents (
    tenant_id  TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    workload   TEXT NOT NULL,
    resource   TEXT NOT NULL,
    scopes     JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, client_id, workload, resource)
);

-- Public clients registered through RFC 7591 (`POST /oauth2/register`).
-- Not bound to a tenant: a tenant's login provider decides whether they
-- may sign its people in (`allow_registration`).
CREATE TABLE registered_clients (
    client_id     TEXT PRIMARY KEY,
    client_name   TEXT,
    redirect_uris JSONB NOT NULL,
    source        TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    last_used_at  TIMESTAMPTZ
);
CREATE INDEX registered_clients_created_idx ON registered_clients (created_at);

-- Interactive clients registered by a tenant admin (`kind: "interactive"`):
-- public clients with the redirect URIs they may be answered at.
ALTER TABLE clients ADD COLUMN redirect_uris JSONB;
