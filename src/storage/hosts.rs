//! Several Postgres hosts in one URL, in libpq's syntax
//! (`postgres://h1:5432,h2:5433/db`): sqlx connects to one host, so this
//! finds the one that accepts writes (not in recovery, not read-only, as
//! libpq's `target_session_attrs=read-write` asks), points the pool at it,
//! and follows it through a failover. A connection opened before the pool
//! moved is closed at its next checkout instead of being used, and one that
//! lands on a standby is refused when it opens. Knows no domain type.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::StoreError;

/// How long one host may take to answer whether it takes writes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The hosts of a multi-host URL, and which one the pool uses.
#[derive(Debug)]
pub struct Hosts {
    candidates: Vec<(String, PgConnectOptions)>,
    current: Mutex<usize>,
    /// When the pool last moved to another host.
    moved_at: Mutex<Instant>,
    /// Bumped at each move: listeners hold their connection for good and
    /// must listen again on the new host.
    moves: tokio::sync::watch::Sender<u64>,
}

/// The URL once per host, when it names several (`None` for one host).
/// `target_session_attrs` is dropped: mayfly always wants the writable host.
pub fn split(url: &str) -> Result<Option<Vec<(String, String)>>, StoreError> {
    let bad = || StoreError::Database(sqlx::Error::Configuration("a malformed multi-host Postgres URL".into()));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    if !hostlist.contains(',') {
        return Ok(None);
    }
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let attrs = query.split('&').find_map(|p| p.strip_prefix("target_session_attrs="));
    if attrs.is_some_and(|a| a != "read-write" && a != "any") {
        return Err(StoreError::Database(sqlx::Error::Configuration(
            "mayfly writes: target_session_attrs may only be read-write (what it always uses)".into(),
        )));
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("target_session_attrs="))
        .collect();
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    hostlist
        .split(',')
        .map(|host| match host.trim() {
            "" => Err(bad()),
            h => Ok((h.to_string(), format!("{scheme}://{userinfo}{h}{path}{query}"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Whether a connection's server refuses writes (a standby, or a primary
/// still read-only while the failover manager finishes promoting it).
pub async fn read_only(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let row: (bool,) = sqlx::query_as("SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.0)
}

impl Hosts {
    pub fn new(urls: Vec<(String, String)>, application: &str) -> Result<Self, StoreError> {
        let candidates = urls
            .into_iter()
            .map(|(host, url)| Ok((host, PgConnectOptions::from_str(&url)?.application_name(application))))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Self {
            candidates,
            current: Mutex::new(0),
            moved_at: Mutex::new(Instant::now()),
            moves: tokio::sync::watch::channel(0).0,
        })
    }

    /// The writable host's index (the first in URL order, should two say
    /// so), asking every host at once: a dead one costs the probe timeout once.
    pub async fn find(&self) -> Option<usize> {
        let asked = futures_util::future::join_all(self.candidates.iter().map(|(_, o)| Self::writable(o))).await;
        asked.iter().position(|&w| w)
    }

    async fn writable(options: &PgConnectOptions) -> bool {
        let probe = async {
            let mut conn = PgConnection::connect_with(options).await?;
            let ro = read_only(&mut conn).await;
            let _ = conn.close().await;
            ro
        };
        matches!(tokio::time::timeout(PROBE_TIMEOUT, probe).await, Ok(Ok(false)))
    }

    pub fn options(&self, i: usize) -> PgConnectOptions {
        self.candidates[i].1.clone()
    }

    /// The host the pool writes to (`host:port` as the URL names it).
    pub fn current(&self) -> String {
        let i = *self.current.lock().unwrap_or_else(|e| e.into_inner());
        self.candidates[i].0.clone()
    }

    pub fn set_current(&self, i: usize) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = i;
        *self.moved_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.moves.send_modify(|n| *n += 1);
    }

    /// Tells of each move from now on.
    pub fn moves(&self) -> tokio::sync::watch::Receiver<u64> {
        self.moves.subscribe()
    }

    /// Whether a connection of this age was opened after the pool last moved.
    pub fn opened_since_move(&self, age: Duration) -> bool {
        age < self.moved_at.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }

    /// Checks the current host; if it no longer takes writes, finds the one
    /// that does. Returns the new index when the pool must move.
    pub async fn recheck(&self) -> Option<usize> {
        let i = *self.current.lock().unwrap_or_else(|e| e.into_inner());
        if Self::writable(&self.candidates[i].1).await {
            return None;
        }
        self.find().await.filter(|&found| found != i)
    }
}

/// An error for a connection that landed on a host that takes no writes.
pub fn not_writable() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(
        "the host does not accept writes (standby or read-only)",
    ))
}

/// Whether a pooled connection may be handed out: opened since the pool
/// last moved and, after a second idle, answering a ping within a second
/// (a host that died without closing its sockets answers nothing).
pub async fn still_usable(conn: &mut PgConnection, fresh: bool, idle: Duration) -> Result<bool, sqlx::Error> {
    if !fresh {
        return Ok(false);
    }
    if idle < Duration::from_secs(1) {
        return Ok(true);
    }
    Ok(matches!(
        tokio::time::timeout(Duration::from_secs(1), conn.ping()).await,
        Ok(Ok(()))
    ))
}

/// Refuses a fresh connection to a host that takes no writes.
pub async fn refuse_read_only(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    match read_only(conn).await? {
        true => Err(not_writable()),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_host_url_becomes_one_url_per_host() {
        let hosts =
            split("postgres://u:p%40w@h1:5432,h2:5433,[::1]:6000/db?sslmode=disable&target_session_attrs=read-write")
                .unwrap()
                .unwrap();
        assert_eq!(
            hosts,
            vec![
                ("h1:5432".into(), "postgres://u:p%40w@h1:5432/db?sslmode=disable".into()),
                ("h2:5433".into(), "postgres://u:p%40w@h2:5433/db?sslmode=disable".into()),
                (
                    "[::1]:6000".into(),
                    "postgres://u:p%40w@[::1]:6000/db?sslmode=disable".into()
                ),
            ]
        );
        assert_eq!(
            split("postgresql://a,b/db?target_session_attrs=read-write")
                .unwrap()
                .unwrap()[1]
                .1,
            "postgresql://b/db"
        );
        assert!(
            split("postgres://h1:5432/db").unwrap().is_none(),
            "one host: sqlx as it is"
        );
        assert!(split("postgres://h1,,h2/db").is_err());
        assert!(split("postgres://h1,h2/db?target_session_attrs=prefer-standby").is_err());
    }
}
