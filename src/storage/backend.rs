//! The seam where the two backends really differ: whose clock orders events,
//! how replicas hear about changes, and the lock that serialises writers.
//! Everything else in storage is the same SQL on both.

use chrono::{DateTime, Utc};

use super::{Conn, ConnRef, Pool, Result, Store, StoreError};

/// The Postgres channel on which key changes are announced.
const KEYS_CHANNEL: &str = "mayfly_keys";
/// The channel on which the catalog triggers announce a tenant's new version
/// (migrations/postgres/0003_catalog.sql).
const CATALOG_CHANNEL: &str = "mayfly_catalog";

/// The writer order on Postgres: a transaction-scoped advisory lock keyed by
/// the schema (0008_transparency_log says why not a row lock), exclusive for
/// catalog changes, revocations, key rotation and start-up (the catalog
/// trigger takes the same one), shared for lease batches.
pub const WRITER_ORDER_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock(7370, hashtext(current_schema()))";
pub const WRITER_ORDER_SHARED: &str = "SELECT pg_advisory_xact_lock_shared(7370, hashtext(current_schema()))";

impl Conn<'_> {
    /// The database's clock on Postgres (shared by every replica); on the
    /// single-node SQLite store the process clock is the database's clock.
    pub async fn db_now(&mut self, local: DateTime<Utc>) -> Result<DateTime<Utc>> {
        Ok(match &mut self.0 {
            ConnRef::Postgres(c) => {
                let t = sqlx::query_scalar::<_, DateTime<Utc>>("SELECT clock_timestamp()")
                    .fetch_one(&mut **c)
                    .await?;
                crate::clock::truncate_micros(t)
            }
            ConnRef::Sqlite(_) => local,
        })
    }

    /// Tells every replica (Postgres LISTEN/NOTIFY, delivered at commit) that
    /// the keys changed. SQLite is single-node: nothing to tell.
    pub async fn notify_keys_changed(&mut self) -> Result<()> {
        if let ConnRef::Postgres(c) = &mut self.0 {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(KEYS_CHANNEL)
                .execute(&mut **c)
                .await?;
        }
        Ok(())
    }

    /// Takes the writer-order lock exclusively (on Postgres an advisory lock,
    /// then the `audit_chain` row as before; the name is from when that row
    /// also headed the audit chain): serialises
    /// start-up work (bootstrap, first key), key rotation and rule numbering
    /// across replicas, and orders each against lease batches, which hold it
    /// shared. On SQLite the transaction's write lock already does.
    pub async fn lock_chain(&mut self) -> Result<()> {
        if self.is_postgres() {
            super::run!(self, c => sqlx::query(WRITER_ORDER_EXCLUSIVE)
                .execute(c).await.map(|r| r.rows_affected()))?;
        }
        super::run!(self, c => sqlx::query("UPDATE audit_chain SET count = count WHERE id = 1")
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}

/// Change notifications on one channel (Postgres only).
pub struct KeyChanges {
    listener: sqlx::postgres::PgListener,
    /// With several hosts: the pool moved, so this listener's host may no
    /// longer be the one that commits changes.
    moved: Option<tokio::sync::watch::Receiver<u64>>,
}

impl KeyChanges {
    /// Waits for the next notification; an error means the listener must be rebuilt.
    pub async fn recv(&mut self) -> Result<()> {
        let Self { listener, moved } = self;
        match moved {
            Some(moved) => tokio::select! {
                r = listener.recv() => r.map(|_| ()).map_err(Into::into),
                _ = moved.changed() => Err(StoreError::Unavailable("the writable host moved; listen again".into())),
            },
            None => listener.recv().await.map(|_| ()).map_err(Into::into),
        }
    }
}

impl Store {
    /// A listener for key changes on Postgres; None on SQLite.
    pub async fn key_changes(&self) -> Result<Option<KeyChanges>> {
        self.listen(KEYS_CHANNEL).await
    }

    /// A listener for catalog changes (clients, secrets, resources) on
    /// Postgres; None on SQLite, where this process makes every change.
    pub async fn catalog_changes(&self) -> Result<Option<KeyChanges>> {
        self.listen(CATALOG_CHANNEL).await
    }

    async fn listen(&self, channel: &str) -> Result<Option<KeyChanges>> {
        match &self.pool {
            Pool::Postgres(p) => {
                let moved = self.hosts.as_ref().map(|h| h.moves());
                let mut listener = sqlx::postgres::PgListener::connect_with(p).await?;
                listener.listen(channel).await?;
                Ok(Some(KeyChanges { listener, moved }))
            }
            Pool::Sqlite(_) => Ok(None),
        }
    }
}
