//! The SQL of MCP activity: what a lease has done (its `mcp.request`
//! events, on the lease index).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::storage::{Conn, Result, run};

/// A lease's last MCP request, as lease detail shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LastRequest {
    pub at: DateTime<Utc>,
    pub outcome: String,
    #[sqlx(json(nullable))]
    pub mcp: Option<serde_json::Value>,
}

impl Conn<'_> {
    /// How many MCP requests were made with `lease`, and the last one.
    pub async fn lease_activity(&mut self, lease: Uuid) -> Result<(i64, Option<LastRequest>)> {
        let count = run!(self, c => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM audit_events WHERE lease_id = $1 AND action = 'mcp.request'")
            .bind(lease).fetch_one(c).await)?;
        if count == 0 {
            return Ok((0, None));
        }
        let last = run!(self, c => sqlx::query_as::<_, LastRequest>(
            "SELECT at, outcome, mcp FROM audit_events WHERE lease_id = $1 AND action = 'mcp.request'
             ORDER BY seq DESC LIMIT 1")
            .bind(lease).fetch_optional(c).await)?;
        Ok((count, last))
    }
}
