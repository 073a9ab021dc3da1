//! Storage: one `Store` over Postgres (production, shared by replicas) or
//! SQLite (embedded single node). Both run the very same SQL text (numbered
//! `$n` parameters, no backend-only functions); schemas differ only in column
//! types (see migrations/). Time always comes in as a parameter from the Clock;
//! ordering that decides validity uses database sequences.

pub mod audit;
pub mod keys;
mod leases;
mod tenants;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, SqlSafeStr, Sqlite, SqlitePool};

pub use leases::{LeaseFilter, LeaseStatus, NewRevocation};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("unsupported database URL (use sqlite://… or postgres://…)")]
    UnsupportedUrl,
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.constraint().unwrap_or(db.message()).to_string())
            }
            other => StoreError::Database(other),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$c` bound to whichever pool the store holds. The body is
/// the same SQL for both backends; it is type-checked once per backend.
macro_rules! on_pool {
    ($store:expr, $c:ident => $body:expr) => {
        match &$store.pool {
            $crate::storage::Pool::Postgres($c) => $body,
            $crate::storage::Pool::Sqlite($c) => $body,
        }
    };
}

/// As `on_pool!`, inside a transaction (`$c` is the transaction).
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match &mut $tx.0 {
            $crate::storage::TxInner::Postgres($c) => $body,
            $crate::storage::TxInner::Sqlite($c) => $body,
        }
    };
}

pub(crate) use {on_pool, on_tx};

#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

enum TxInner {
    Postgres(sqlx::Transaction<'static, Postgres>),
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

/// A write transaction. Dropped without `commit`, it rolls back.
pub struct Tx(TxInner);

impl Tx {
    pub async fn commit(self) -> Result<()> {
        match self.0 {
            TxInner::Postgres(t) => t.commit().await?,
            TxInner::Sqlite(t) => t.commit().await?,
        }
        Ok(())
    }
}

fn migration(sql: &'static str) -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("init"),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )])
}

impl Store {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?.application_name("mayfly");
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("sqlite:") {
            if let Some(dir) = crate::keys::seal::sqlite_data_dir(url) {
                std::fs::create_dir_all(&dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            }
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // A token is returned only once its lease is durable.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?,
            )
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        Ok(Self { pool })
    }

    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Postgres(p) => {
                migration(include_str!("../../migrations/postgres/0001_init.sql"))
                    .run(p)
                    .await?
            }
            Pool::Sqlite(p) => {
                migration(include_str!("../../migrations/sqlite/0001_init.sql"))
                    .run(p)
                    .await?
            }
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, c => sqlx::query("SELECT 1").execute(c).await.map(|_| ()))?;
        Ok(())
    }

    /// Starts a write transaction. SQLite takes its write lock up front
    /// (`BEGIN IMMEDIATE`) so concurrent writers queue instead of failing.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(Tx(match &self.pool {
            Pool::Postgres(p) => TxInner::Postgres(p.begin().await?),
            Pool::Sqlite(p) => TxInner::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        }))
    }

    pub async fn close(&self) {
        on_pool!(self, c => c.close().await)
    }
}

/// Opaque pagination cursor: the sort key of the last item served.
pub fn encode_cursor(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("c:{key}"))
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(raw).ok()?;
    // Cursors are ours: anything with control characters (NUL included) is not.
    if text.chars().any(char::is_control) {
        return None;
    }
    text.strip_prefix("c:").map(str::to_string)
}
