//! The catalog: every live client (with its secret digests) and every
//! resource, per tenant, held in memory so that minting reads no database
//! row. Each tenant's part carries the version it was loaded at; the lease
//! writer commits a decision only while that version is still the stored one
//! (`tokens::commit`), so a stale part costs a retry, never a wrong token.
//! It must never answer from a part it cannot tie to a version.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::{Client, Resource, secret};
use crate::clock::Clock;
use crate::storage::{Store, StoreError};

/// How often a replica compares every tenant's version with the database,
/// whether or not a change notification arrived.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A live secret's digest and when it stops being accepted.
struct Secret {
    digest: Vec<u8>,
    expires_at: Option<DateTime<Utc>>,
}

struct Entry {
    client: Client,
    secrets: Vec<Secret>,
}

/// What a catalog answer was read at: the tenant's version and the global
/// catalog sequence (see migrations/*/0003_catalog.sql).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub tenant: i64,
    pub global: i64,
}

impl Stamp {
    /// The older of two readings, so a check against it holds only if both do.
    pub fn older(self, other: Stamp) -> Stamp {
        Stamp {
            tenant: self.tenant.min(other.tenant),
            global: self.global.min(other.global),
        }
    }
}

/// One tenant's clients and resources, as of `version` (and of the global
/// sequence `global`, read before them).
struct Part {
    version: i64,
    global: i64,
    clients: HashMap<String, Entry>,
    /// By canonical URI.
    resources: HashMap<String, Resource>,
}

impl Part {
    fn stamp(&self) -> Stamp {
        Stamp {
            tenant: self.version,
            global: self.global,
        }
    }
}

#[derive(Default)]
struct Snapshot {
    parts: HashMap<String, Arc<Part>>,
    /// Client id → tenant.
    owners: HashMap<String, String>,
}

/// What a secret check found.
#[derive(Debug)]
pub enum Checked {
    /// The client, stamped with the catalog version it was read at.
    Valid(Client),
    Unknown,
    BadSecret(Client),
    Disabled(Client),
}

impl Checked {
    fn is_valid(&self) -> bool {
        matches!(self, Checked::Valid(_))
    }
}

/// A resource with the catalog version it was read at.
pub struct Found {
    pub resource: Resource,
    pub stamp: Stamp,
}

pub struct Catalog {
    store: Store,
    clock: Arc<dyn Clock>,
    state: RwLock<Arc<Snapshot>>,
    /// One reload at a time; readers never wait for it.
    reloading: tokio::sync::Mutex<()>,
}

impl Catalog {
    /// Loads every tenant's part.
    pub async fn load(store: Store, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StoreError> {
        let catalog = Arc::new(Self {
            store,
            clock,
            state: RwLock::default(),
            reloading: tokio::sync::Mutex::new(()),
        });
        catalog.refresh().await?;
        Ok(catalog)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn check_now(&self, client_id: &str, presented: &SecretString) -> Checked {
        let snap = self.snapshot();
        let found = snap
            .owners
            .get(client_id)
            .and_then(|t| snap.parts.get(t))
            .and_then(|p| p.clients.get(client_id).map(|e| (p.stamp(), e)));
        let Some((stamp, entry)) = found else {
            // Spend the same comparison, so timing does not tell which ids exist.
            let _ = secret::matches(presented, &[0u8; 32]);
            return Checked::Unknown;
        };
        let now = self.clock.now();
        // Check every live secret (at most two) without stopping at the first match.
        let matched = entry
            .secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|at| at > now))
            .fold(false, |ok, s| secret::matches(presented, &s.digest) | ok);
        let mut client = entry.client.clone();
        client.catalog_version = Some(stamp);
        if !matched {
            Checked::BadSecret(client)
        } else if client.disabled {
            Checked::Disabled(client)
        } else {
            Checked::Valid(client)
        }
    }

    /// Checks a client's secret. Anything but a valid answer is checked
    /// again after catching up with the database, so a client, secret or
    /// re-enabling made through another replica works at once.
    pub async fn check_secret(&self, client_id: &str, presented: &SecretString) -> Result<Checked, StoreError> {
        let first = self.check_now(client_id, presented);
        if first.is_valid() {
            return Ok(first);
        }
        match &first {
            Checked::Unknown => self.refresh().await?,
            Checked::BadSecret(c) | Checked::Disabled(c) => self.catch_up(&c.tenant_id).await?,
            Checked::Valid(_) => {}
        }
        Ok(self.check_now(client_id, presented))
    }

    fn client_now(&self, tenant: Option<&str>, client_id: &str) -> Option<Client> {
        let snap = self.snapshot();
        let owner = snap.owners.get(client_id)?;
        if tenant.is_some_and(|t| t != owner) {
            return None;
        }
        let part = snap.parts.get(owner)?;
        let mut client = part.clients.get(client_id)?.client.clone();
        client.catalog_version = Some(part.stamp());
        Some(client)
    }

    /// A client by id (within `tenant` if given), stamped with the version
    /// it was read at, disabled or not: the caller decides. A miss is
    /// checked again after catching up with the database. A lease minted
    /// under it commits only while that version holds (`tokens::commit`),
    /// so a disable made through any replica stops it even when this
    /// replica has not heard of the change yet.
    pub async fn client(&self, tenant: Option<&str>, client_id: &str) -> Result<Option<Client>, StoreError> {
        if let Some(found) = self.client_now(tenant, client_id) {
            return Ok(Some(found));
        }
        match tenant {
            Some(t) => self.catch_up(t).await?,
            None => self.refresh().await?,
        }
        Ok(self.client_now(tenant, client_id))
    }

    fn resource_now(&self, tenant: &str, canonical_uri: &str) -> Option<Found> {
        let snap = self.snapshot();
        let part = snap.parts.get(tenant)?;
        part.resources.get(canonical_uri).map(|r| Found {
            resource: r.clone(),
            stamp: part.stamp(),
        })
    }

    /// A tenant's resource by canonical URI; a miss is checked again after
    /// catching up with the database.
    pub async fn resource(&self, tenant: &str, canonical_uri: &str) -> Result<Option<Found>, StoreError> {
        if let Some(found) = self.resource_now(tenant, canonical_uri) {
            return Ok(Some(found));
        }
        self.catch_up(tenant).await?;
        Ok(self.resource_now(tenant, canonical_uri))
    }

    /// The version of `tenant`'s part held now (0: none).
    pub fn version(&self, tenant: &str) -> i64 {
        self.stamp(tenant).tenant
    }

    /// What `tenant`'s part held now was read at (zeros: none).
    pub fn stamp(&self, tenant: &str) -> Stamp {
        self.snapshot()
            .parts
            .get(tenant)
            .map_or(Stamp { tenant: 0, global: 0 }, |p| p.stamp())
    }

    /// Reloads `tenant` if the database holds a newer version of it.
    pub async fn catch_up(&self, tenant: &str) -> Result<(), StoreError> {
        let stored = self.store.read().await?.conn().catalog_version(tenant).await?;
        if stored != self.version(tenant) {
            self.reload(vec![(tenant.to_string(), stored)]).await?;
        }
        Ok(())
    }

    /// Compares every tenant's version with the database and reloads the
    /// ones that moved.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let stored = self.store.read().await?.conn().catalog_versions().await?;
        let snap = self.snapshot();
        let moved: Vec<(String, i64)> = stored
            .into_iter()
            .filter(|(t, v)| snap.parts.get(t).is_none_or(|p| p.version != *v))
            .collect();
        if !moved.is_empty() {
            self.reload(moved).await?;
        }
        Ok(())
    }

    async fn load_part(&self, tenant: &str) -> Result<Part, StoreError> {
        let mut conn = self.store.read().await?;
        // The sequence and version first: rows read after them are at least
        // that new, so a part is never newer in name than in content.
        let global = conn.conn().catalog_seq().await?;
        let version = conn.conn().catalog_version(tenant).await?;
        let rows = conn.conn().catalog_clients(tenant, self.clock.now()).await?;
        let resources = conn.conn().catalog_resources(tenant).await?;
        let mut clients: HashMap<String, Entry> = HashMap::new();
        for row in rows {
            let entry = clients.entry(row.client.client_id.clone()).or_insert_with(|| Entry {
                client: row.client,
                secrets: Vec::new(),
            });
            if let Some(digest) = row.secret_hash {
                entry.secrets.push(Secret {
                    digest,
                    expires_at: row.secret_expires_at,
                });
            }
        }
        Ok(Part {
            version,
            global,
            clients,
            resources: resources.into_iter().map(|r| (r.canonical_uri.clone(), r)).collect(),
        })
    }

    /// Loads the parts of tenants seen at a version; one reload at a time,
    /// and a tenant some earlier reload already brought that far is skipped
    /// (a change seen by many requests at once is loaded once).
    async fn reload(&self, seen: Vec<(String, i64)>) -> Result<(), StoreError> {
        let _one = self.reloading.lock().await;
        let mut loaded = Vec::with_capacity(seen.len());
        for (tenant, version) in seen {
            if self.version(&tenant) == version {
                continue;
            }
            let part = self.load_part(&tenant).await?;
            loaded.push((tenant, part));
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut next = Snapshot {
            parts: state.parts.clone(),
            owners: state.owners.clone(),
        };
        for (tenant, part) in loaded {
            if next
                .parts
                .get(&tenant)
                .is_some_and(|p| (p.version, p.global) >= (part.version, part.global))
            {
                continue;
            }
            if let Some(old) = next.parts.get(&tenant) {
                for id in old.clients.keys() {
                    next.owners.remove(id);
                }
            }
            for id in part.clients.keys() {
                next.owners.insert(id.clone(), tenant.clone());
            }
            next.parts.insert(tenant, Arc::new(part));
        }
        *state = Arc::new(next);
        Ok(())
    }

    /// Keeps the catalog current: reloads on change notifications (Postgres)
    /// and compares versions every `POLL_INTERVAL` in any case.
    pub async fn run(self: Arc<Self>) {
        let mut changes = None;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        loop {
            if changes.is_none() {
                changes = self.store.catalog_changes().await.ok().flatten();
            }
            let notified = async {
                match changes.as_mut() {
                    Some(c) => c.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                heard = notified => if heard.is_err() { changes = None; },
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cannot refresh the client and resource catalog; will retry");
            }
        }
    }
}
