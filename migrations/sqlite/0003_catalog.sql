-- The mint path reads clients, their secrets and resources from an in-memory
-- catalog. Every change to them bumps its tenant's version here (by trigger,
-- so no code path can forget), and a lease batch commits only if the
-- versions its decisions were made on are still current. SQLite's write
-- lock (BEGIN IMMEDIATE) orders changes and batches.
CREATE TABLE catalog_versions (
    tenant_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
);
INSERT INTO catalog_versions (tenant_id, version) SELECT id, 1 FROM tenants;
-- Bumped by every change to the catalog, on the chain row a lease batch
-- reads anyway: when it still equals what the catalog was loaded at, no
-- per-tenant check is needed.
ALTER TABLE audit_chain ADD COLUMN catalog_seq INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER clients_catalog_insert AFTER INSERT ON clients BEGIN
    UPDATE audit_chain SET catalog_seq = catalog_seq + 1 WHERE id = 1;
    INSERT OR IGNORE INTO catalog_versions (tenant_id, version) VALUES (NEW.tenant_id, 0);
    UPDATE catalog_versions SET version = version + 1 WHERE tenant_id = NEW.tenant_id;
END;
CREATE TRIGGER clients_catalog_update AFTER UPDATE ON clients BEGIN
    UPDATE audit_chain SET catalog_seq = catalog_seq + 1 WHERE id = 1;
    INSERT OR IGNORE INTO catalog_versions (tenant_id, version) VALUES (NEW.tenant_id, 0);
    UPDATE catalog_versions SET version = version + 1 WHERE tenant_id IN (OLD.tenant_id, NEW.tenant_id);
END;
CREATE TRIGGER clients_catalog_delete AFTER DELETE ON clients BEGIN
    UPDATE audit_chain SET catalog_seq = catalog_seq + 1 WHERE id = 1;
    UPDATE catalog_versions SET version = version + 1 WHERE tenant_id = OLD.tenant_id;
END;
CREATE TRIGGER resources_catalog_insert AFTER INSERT ON resources BEGIN
    UPDATE audit_chain SET catalog_seq = catalog_seq + 1 WHERE id = 1;
    INSERT OR IGNORE INTO catalog_versions (tenant_id, version) VALUES (NEW.tenant_id, 0);
    UPDATE catalog_versions SET version = version + 1 WHERE tenant_id = NEW.tenant_id;
END;
CREATE TRIGGER resources_catalog_update AFTER UPDATE ON resources BEGIN
    UPDATE audit_chain SET catalog_seq = catalog_seq + 1 WHERE id = 1;
    INSERT OR IGNORE INTO catalog_versions (tenant_id, version) VALUES (NEW.tenant_id, 0);
    UPDATE catalog_versions SET version = version + 1 WHERE tenant_id IN (OLD.tenant_id, NEW.tenant_id);
END;
CREATE TRIGGER resources_catalog_delete AFTER DELETE ON resources BEGIN
    UPDATE audit_chain SET catalog_seq = catalog_seq + 1 WHERE id = 1;
    UPDATE catalog_versions SET version = version + 1 WHERE tenant_id = OLD.tenant_id;
END;
CREATE TRIGGER client_secrets_catalog_insert AFTER INSERT ON client_secrets BEGIN
    UPDATE audit_chain SET catalog_seq = catalog_seq + 1 WHERE id = 1;
    UPDATE catalog_versions SET version = version + 1
    WHERE tenant_id = (SELECT tenant_id FROM clients WHERE client_id = NEW.client_id);
END;
CREATE TRIGGER client_secrets_catalog_update AFTER UPDATE ON client_secrets BEGIN
    UPDATE audit_chain SET catalog_seq = catalog_seq + 1 WHERE id = 1;
    UPDATE catalog_versions SET version = version + 1
    WHERE tenant_id = (SELECT tenant_id FROM clients WHERE client_id = NEW.client_id);
END;
CREATE TRIGGER client_secrets_catalog_delete AFTER DELETE ON client_secrets BEGIN
    UPDATE audit_chain SET catalog_seq = catalog_seq + 1 WHERE id = 1;
    UPDATE catalog_versions SET version = version + 1
    WHERE tenant_id = (SELECT tenant_id FROM clients WHERE client_id = OLD.client_id);
END;
