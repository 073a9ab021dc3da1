//! Storage is the floor: one `Store` over Postgres (production, shared by
//! replicas) or SQLite (embedded single node), the connection and
//! transaction types, the list gate, file modes, and the backend quirks
//! (`backend.rs`: the database clock, change notifications). It knows no
//! domain type: each domain keeps its own SQL beside it, as methods on
//! `Conn` (`leases/sql.rs`, `leases/rules_sql.rs`, `audit/sql.rs`,
//! `keys/sql.rs`, `tenants/sql.rs`, `federation/sql.rs`), written once with
//! `run!` and numbered `$n` parameters, type-checked against both backends.
//! Time always comes in as a parameter.
//!
//! # The backend contract
//! What correctness across replicas rests on, and any new backend must give:
//! - **One writer order, shared by mints.** Postgres: an advisory lock
//!   (`backend::WRITER_ORDER_*`, keyed by schema) is taken exclusively by
//!   every catalog change (a BEFORE STATEMENT trigger takes it first,
//!   0003_catalog, 0008), revocation, key rotation and start-up, and shared
//!   by every lease batch: a batch is ordered against each of those, never
//!   against another batch, and a waiting exclusive request is not starved
//!   (the lock manager queues later shared requests behind it). Audit appends take no shared row at all (0008:
//!   each event hashes its own content). SQLite: `BEGIN IMMEDIATE` takes
//!   the one write lock, which orders everything.
//! - **One integrator.** The `audit_log` row is held `FOR UPDATE SKIP
//!   LOCKED` by the replica integrating; the others skip. Only committed
//!   events are visible in `audit_pending`, so no sequence gap is guessed at.
//! - **Database sequences decide validity**, never a replica's clock: a
//!   lease's `seq` against a rule's `cutoff_seq` (revocation), the global
//!   `catalog_seq` and per-tenant `catalog_versions` (a mint's decision
//!   holds only while they are unchanged, `tokens::commit`).
//! - **Triggers correctness depends on:** the catalog triggers on `clients`,
//!   `client_secrets` and `resources` (bump the versions, and on Postgres
//!   `NOTIFY mayfly_catalog`), the append-only triggers on
//!   `audit_events`, `audit_leaves`, `audit_nodes` and `audit_tree_heads`
//!   (no UPDATE or DELETE), and the trigger that queues every new event in
//!   `audit_pending` for the integrator. Code never bumps a version
//!   itself, so no code path can forget to.
//! - **Uniqueness is the database's:** single-use assertion ids
//!   (`used_assertions`), resource URIs (tombstones included) and client ids
//!   are unique constraints; a violation surfaces as `StoreError::Conflict`.
//! - **Errors are classified here once:** connection loss and shutdown are
//!   `Unavailable` (503 with Retry-After), a statement timeout is `Busy`.

pub mod backend;
pub mod files;
pub mod gate;
pub mod gather;
pub mod hosts;

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Too much admin reading at once, or a list query past its time.
    #[error("busy: {0}")]
    Busy(String),
    /// A catalog version a decision was made on is no longer the stored one.
    #[error("the clients or resources changed while the request was decided; retry")]
    Stale,
    /// A single-use value (an assertion's or a DPoP proof's `jti`) was used before.
    #[error("a single-use value was used before")]
    Spent,
    /// The record's own check before commit failed (a token that could not
    /// be signed), so it was taken out of the transaction again.
    #[error("taken out before commit: {0}")]
    Withdrawn(String),
    #[error("unsupported database URL (use sqlite://… or postgres://…)")]
    UnsupportedUrl,
    /// A stored value this build cannot read (a state or kind it does not know).
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Whether a SQLSTATE means "the database is going away or not accepting
/// work": admin shutdown, crash shutdown, cannot connect now (57P01-03), any
/// connection exception (class 08), too many connections (53300).
pub fn sqlstate_is_unavailable(code: &str) -> bool {
    // 25006: a read-only transaction, what a demoted primary answers a write.
    matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "25006") || code.starts_with("08")
}

/// The one place database errors are classified. "Unavailable" errors are
/// answered 503 with Retry-After, never 500, wherever they surface.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.constraint().unwrap_or(db.message()).to_string())
            }
            sqlx::Error::Database(ref db) if db.code().is_some_and(|c| sqlstate_is_unavailable(&c)) => {
                StoreError::Unavailable(e.to_string())
            }
            // statement_timeout: only admin lists set one.
            sqlx::Error::Database(ref db) if db.code().as_deref() == Some("57014") => {
                StoreError::Busy("the list query took too long; narrow it".into())
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            other => StoreError::Database(other),
        }
    }
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// An error shared by every request of a batch, back as one request's
    /// own: the same class (and so the same answer), the detail as text.
    pub fn unshare(shared: std::sync::Arc<StoreError>) -> StoreError {
        std::sync::Arc::try_unwrap(shared).unwrap_or_else(|e| match &*e {
            StoreError::Unavailable(_) => StoreError::Unavailable(e.to_string()),
            StoreError::Busy(m) => StoreError::Busy(m.clone()),
            StoreError::NotFound => StoreError::NotFound,
            StoreError::Conflict(c) => StoreError::Conflict(c.clone()),
            StoreError::Stale => StoreError::Stale,
            StoreError::Spent => StoreError::Spent,
            StoreError::Withdrawn(why) => StoreError::Withdrawn(why.clone()),
            other => StoreError::Corrupt(other.to_string()),
        })
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// The hosts of a multi-host Postgres URL, and which one is written to.
    hosts: Option<std::sync::Arc<hosts::Hosts>>,
    /// Bounds admin list queries (see `gate`).
    gate: std::sync::Arc<gate::ReadGate>,
}

/// One database connection, pooled or inside a transaction. Every query of
/// the store is a method on it, written once for both uses.
pub struct Conn<'c>(pub(crate) ConnRef<'c>);

pub(crate) enum ConnRef<'c> {
    Postgres(&'c mut PgConnection),
    Sqlite(&'c mut SqliteConnection),
}

/// Runs `$body` with `$c` bound to the connection (`&mut PgConnection` or
/// `&mut SqliteConnection`); the body is the same SQL for both backends and
/// is type-checked once per backend.
macro_rules! run {
    ($conn:expr, $c:ident => $body:expr) => {
        match &mut $conn.0 {
            $crate::storage::ConnRef::Postgres(inner) => {
                let $c = &mut **inner;
                $body
            }
            $crate::storage::ConnRef::Sqlite(inner) => {
                let $c = &mut **inner;
                $body
            }
        }
    };
}
pub(crate) use run;

impl Conn<'_> {
    /// For the few statements written once per backend.
    pub fn is_postgres(&self) -> bool {
        matches!(self.0, ConnRef::Postgres(_))
    }
}

/// A connection borrowed from the pool for a few reads.
pub enum Pooled {
    Postgres(PoolConnection<Postgres>),
    Sqlite(PoolConnection<Sqlite>),
}

impl Pooled {
    pub fn conn(&mut self) -> Conn<'_> {
        Conn(match self {
            Pooled::Postgres(c) => ConnRef::Postgres(c),
            Pooled::Sqlite(c) => ConnRef::Sqlite(c),
        })
    }
}

enum TxInner {
    Postgres(sqlx::Transaction<'static, Postgres>),
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

/// A write transaction. Dropped without `commit`, it rolls back.
pub struct Tx(TxInner, Vec<AfterCommit>);

/// Work that must follow a commit and never a rollback (waking the workers
/// that act on what was written).
type AfterCommit = Box<dyn FnOnce() + Send>;

impl Tx {
    fn new(inner: TxInner) -> Self {
        Tx(inner, Vec::new())
    }

    /// Runs `hook` once this transaction has committed; never when it is
    /// rolled back or its commit fails. The writer of a record registers
    /// what must follow it, so callers cannot forget it.
    pub fn after_commit(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.1.push(Box::new(hook));
    }

    pub fn conn(&mut self) -> Conn<'_> {
        Conn(match &mut self.0 {
            TxInner::Postgres(t) => ConnRef::Postgres(t),
            TxInner::Sqlite(t) => ConnRef::Sqlite(t),
        })
    }

    /// Commits. A failure here leaves the outcome unknown (the server may
    /// have committed before the connection broke): never retry after it.
    pub async fn commit(self) -> Result<()> {
        match self.0 {
            TxInner::Postgres(t) => t.commit().await?,
            TxInner::Sqlite(t) => t.commit().await?,
        }
        self.1.into_iter().for_each(|hook| hook());
        Ok(())
    }
}

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Makes the SQLite database and its WAL and shared-memory files readable by
/// their owner only (SQLite creates them 0644). Files of an older data
/// directory are tightened too; SQLite gives later WAL files the database's mode.
#[cfg(unix)]
fn restrict_sqlite_files(db: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut paths = vec![db.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = db.as_os_str().to_os_string();
        name.push(suffix);
        paths.push(name.into());
    }
    for path in paths {
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            // In-memory databases have no files; the WAL may not exist yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

impl Store {
    pub async fn connect(url: &str) -> Result<Self> {
        let mut hosts = None;
        let pool = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5));
            match hosts::split(url)? {
                None => Pool::Postgres(
                    pool.connect_with(PgConnectOptions::from_str(url)?.application_name("mayfly"))
                        .await?,
                ),
                Some(urls) => {
                    let several = std::sync::Arc::new(hosts::Hosts::new(urls, "mayfly")?);
                    let first = several.find().await.ok_or_else(|| {
                        StoreError::Unavailable("none of the hosts in MAYFLY_DATABASE_URL accepts writes".into())
                    })?;
                    several.set_current(first);
                    let (fresh, released) = (several.clone(), several.clone());
                    let pool = pool
                        // A connection that lands on a standby is refused as it opens...
                        .after_connect(|conn, _| Box::pin(hosts::refuse_read_only(conn)))
                        // ...one opened before the pool moved is closed, not used
                        // (nor pinged: a dead host may never answer a ping)...
                        .test_before_acquire(false)
                        .before_acquire(move |conn, meta| {
                            let keep = fresh.opened_since_move(meta.age);
                            Box::pin(hosts::still_usable(conn, keep, meta.idle_for))
                        })
                        // ...and not kept when it comes back.
                        .after_release(move |_, meta| {
                            let keep = released.opened_since_move(meta.age);
                            Box::pin(async move { Ok(keep) })
                        })
                        .connect_with(several.options(first))
                        .await?;
                    hosts = Some(several);
                    Pool::Postgres(pool)
                }
            }
        } else if url.starts_with("sqlite:") {
            if let Some(dir) = files::sqlite_data_dir(url) {
                files::create_private_dir(&dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            }
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // A token is returned only once its lease is durable.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            #[cfg(unix)]
            let db = options.get_filename().to_path_buf();
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            #[cfg(unix)]
            restrict_sqlite_files(&db).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            Pool::Sqlite(pool)
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        // A quarter of the connections for admin lists; the rest stay for minting.
        let lists = match &pool {
            Pool::Postgres(p) => p.options().get_max_connections() as usize / 4,
            Pool::Sqlite(p) => p.options().get_max_connections() as usize / 2,
        };
        Ok(Self {
            pool,
            gate: std::sync::Arc::new(gate::ReadGate::new(lists)),
            hosts,
        })
    }

    /// The host written to, when MAYFLY_DATABASE_URL names several.
    pub fn primary(&self) -> Option<String> {
        self.hosts.as_ref().map(|h| h.current())
    }

    /// Follows the writable host when MAYFLY_DATABASE_URL names several:
    /// twice a second it asks the current one, and after a failover points
    /// the pool at the new primary. Until then writes answer 503.
    pub async fn follow_primary(self) {
        let (Some(hosts), Pool::Postgres(pool)) = (self.hosts.clone(), &self.pool) else {
            // Nothing to follow; never ending keeps the serve loop's task watch meaningful.
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(moved) = hosts.recheck().await {
                let from = hosts.current();
                pool.set_connect_options(hosts.options(moved));
                hosts.set_current(moved);
                tracing::warn!(from = %from, to = %hosts.current(), "the writable Postgres host moved; following it");
            }
        }
    }

    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    /// A pooled connection for reads: `store.read().await?.conn().get_tenant(…)`.
    pub async fn read(&self) -> Result<Pooled> {
        Ok(match &self.pool {
            Pool::Postgres(p) => Pooled::Postgres(p.acquire().await?),
            Pool::Sqlite(p) => Pooled::Sqlite(p.acquire().await?),
        })
    }

    pub async fn ping(&self) -> Result<()> {
        let mut c = self.read().await?;
        run!(c.conn(), c => sqlx::query("SELECT 1").execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Starts a write transaction. SQLite takes its write lock up front
    /// (`BEGIN IMMEDIATE`) so concurrent writers queue instead of failing.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(Tx::new(match &self.pool {
            Pool::Postgres(p) => TxInner::Postgres(p.begin().await?),
            Pool::Sqlite(p) => TxInner::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        }))
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{Store, sqlstate_is_unavailable};

    #[tokio::test]
    async fn after_commit_hooks_run_once_a_transaction_commits_and_never_after_a_rollback() {
        let (store, _dir) = crate::testing::temp_store().await;
        let ran = Arc::new(AtomicUsize::new(0));
        let hook = |ran: &Arc<AtomicUsize>| {
            let ran = ran.clone();
            move || {
                ran.fetch_add(1, Ordering::SeqCst);
            }
        };
        let mut tx = store.begin().await.unwrap();
        tx.after_commit(hook(&ran));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "not before the commit");
        tx.commit().await.unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        let mut dropped = store.begin().await.unwrap();
        dropped.after_commit(hook(&ran));
        drop(dropped);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "a rolled-back transaction runs nothing");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_sqlite_data_directory_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("mayfly-store-{}", uuid::Uuid::new_v4().simple()));
        let _cleanup = crate::testing::TempDir(root.clone());
        let dir = root.join("sub");
        let db = dir.join("mayfly.db");
        let url = format!("sqlite://{}", db.display());
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        for sibling in ["mayfly.db-wal", "mayfly.db-shm"] {
            let path = dir.join(sibling);
            if path.exists() {
                assert_eq!(mode(&path), 0o600, "{sibling}");
            }
        }
        store.close().await;

        // A data directory from before: its files are tightened at start.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(mode(&db), 0o600);
        store.close().await;
    }

    #[test]
    fn shutdown_connection_and_capacity_sqlstates_are_unavailable_and_others_are_not() {
        for code in [
            "57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "08004", "08P01", "53300",
        ] {
            assert!(sqlstate_is_unavailable(code), "{code}");
        }
        // Unique violation, syntax error, serialization failure, disk full: not "going away".
        for code in ["23505", "42601", "40001", "53100", "57014", "XX000"] {
            assert!(!sqlstate_is_unavailable(code), "{code}");
        }
    }
}
