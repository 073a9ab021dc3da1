-- Admin reads of the audit trail stay on an index however long it grows:
-- a list filtered by action walks (tenant, action) newest first, and the
-- console's per-minute stats read one time window of one tenant. `action`
-- trails the time index so counting a window needs no table rows.
-- SQLite builds each index in one write transaction: mints wait while it runs.
CREATE INDEX IF NOT EXISTS audit_events_action_idx ON audit_events (tenant_id, action, seq);
CREATE INDEX IF NOT EXISTS audit_events_at_idx ON audit_events (tenant_id, at, action);
