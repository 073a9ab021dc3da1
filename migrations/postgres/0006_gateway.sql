-- The gateway (issue 21). A resource may carry the per-tool policy gateways
-- enforce; an audit event may carry what an MCP request did (method, tool,
-- arguments digest, upstream status, latency, session): NULL for every other
-- action, so events written before this migration hash as they did.
-- Lease detail counts a lease's MCP requests through the last index.
ALTER TABLE resources ADD COLUMN tools JSONB;
ALTER TABLE audit_events ADD COLUMN mcp JSONB;
CREATE INDEX IF NOT EXISTS audit_events_lease_idx ON audit_events (lease_id, seq) WHERE lease_id IS NOT NULL;
