//! Every replica's view of the signing keys follows the store: reloaded at
//! once on a Postgres notification that another replica changed them, and by
//! polling as a safety net. A set that cannot be loaded marks the replica
//! not ready rather than signing with something stale.

use super::KeyState;
use super::rotation::KeyService;

impl KeyService {
    /// Reloads the keyring when the stored keys change (another replica
    /// rotated): at once on a Postgres notification, and by polling as a
    /// safety net.
    pub async fn run_refresh(self) {
        let mut tick = tokio::time::interval(self.schedule.tick_interval());
        let mut listener = None;
        let mut last: Vec<(String, KeyState)> = Vec::new();
        loop {
            if listener.is_none() {
                listener = self.store.key_changes().await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot listen for key changes; polling only");
                    None
                });
            }
            match listener.as_mut() {
                Some(l) => tokio::select! {
                    _ = tick.tick() => {}
                    note = l.recv() => {
                        if note.is_err() {
                            listener = None; // reconnect on the next turn
                        }
                    }
                },
                None => {
                    tick.tick().await;
                }
            }
            let rows = match self.store.read().await {
                Ok(mut c) => c.conn().list_keys().await,
                Err(e) => Err(e),
            };
            match rows {
                Ok(rows) => {
                    let seen: Vec<_> = rows.iter().map(|k| (k.kid.clone(), k.state)).collect();
                    if seen != last {
                        match self.vault.load(&rows) {
                            Ok(set) => {
                                self.keyring.replace(set);
                                self.keyring.set_stale(false);
                                last = seen;
                            }
                            Err(e) => {
                                self.keyring.set_stale(true);
                                tracing::error!(error = %e, "cannot load signing keys; this replica is not ready");
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot refresh signing keys"),
            }
        }
    }
}
