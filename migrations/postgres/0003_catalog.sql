-- The mint path reads clients, their secrets and resources from an in-memory
-- catalog per replica. Every change to them bumps its tenant's version here
-- (by trigger, so no code path can forget), and a lease batch commits only
-- if the versions its decisions were made on are still current.
CREATE TABLE catalog_versions (
    tenant_id TEXT PRIMARY KEY,
    version   BIGINT NOT NULL
);
INSERT INTO catalog_versions (tenant_id, version) SELECT id, 1 FROM tenants;
-- Bumped by every statement that changes the catalog, on the chain row a
-- lease batch locks anyway: when it still equals what a replica's catalog
-- was loaded at, no per-tenant check is needed.
ALTER TABLE audit_chain ADD COLUMN catalog_seq BIGINT NOT NULL DEFAULT 0;

-- Before any row changes, take the audit-chain row lock: a lease batch takes
-- it first and then reads the versions, so a change is either committed
-- before the batch reads them or waits until the batch has committed. Taking
-- it before the row locks keeps one lock order (chain, then rows).
CREATE FUNCTION catalog_lock() RETURNS trigger AS $$
BEGIN
    UPDATE audit_chain SET catalog_seq = catalog_seq + 1 WHERE id = 1;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION catalog_bump_tenant(t TEXT) RETURNS void AS $$
BEGIN
    INSERT INTO catalog_versions (tenant_id, version) VALUES (t, 1)
    ON CONFLICT (tenant_id) DO UPDATE SET version = catalog_versions.version + 1;
    -- Delivered at commit; replicas then reload that tenant (polling is the backstop).
    PERFORM pg_notify('mayfly_catalog', t);
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION catalog_bump() RETURNS trigger AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN PERFORM catalog_bump_tenant(OLD.tenant_id); END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.tenant_id <> OLD.tenant_id) THEN
        PERFORM catalog_bump_tenant(NEW.tenant_id);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION catalog_bump_secret() RETURNS trigger AS $$
DECLARE
    owner TEXT;
BEGIN
    SELECT tenant_id INTO owner FROM clients
    WHERE client_id = CASE WHEN TG_OP = 'DELETE' THEN OLD.client_id ELSE NEW.client_id END;
    IF owner IS NOT NULL THEN PERFORM catalog_bump_tenant(owner); END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER clients_catalog_lock BEFORE INSERT OR UPDATE OR DELETE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_lock();
CREATE TRIGGER clients_catalog_bump AFTER INSERT OR UPDATE OR DELETE ON clients
    FOR EACH ROW EXECUTE FUNCTION catalog_bump();
CREATE TRIGGER resources_catalog_lock BEFORE INSERT OR UPDATE OR DELETE ON resources
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_lock();
CREATE TRIGGER resources_catalog_bump AFTER INSERT OR UPDATE OR DELETE ON resources
    FOR EACH ROW EXECUTE FUNCTION catalog_bump();
CREATE TRIGGER client_secrets_catalog_lock BEFORE INSERT OR UPDATE OR DELETE ON client_secrets
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_lock();
CREATE TRIGGER client_secrets_catalog_bump AFTER INSERT OR UPDATE OR DELETE ON client_secrets
    FOR EACH ROW EXECUTE FUNCTION catalog_bump_secret();
