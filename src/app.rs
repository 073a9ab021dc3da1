//! Application state and start-up: open the store, migrate, load keys,
//! bootstrap, then serve until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::keys::Keyring;
use crate::keys::seal::{MasterKey, MasterKeySource, load_master_key};
use crate::storage::Store;
use crate::{bootstrap, keys, tenants};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub keyring: Keyring,
    pub master: MasterKey,
    /// The master key being rotated away from (MAYFLY_MASTER_KEY_PREVIOUS).
    pub master_previous: Option<MasterKey>,
    pub clock: Arc<dyn Clock>,
    /// The issuer in canonical form: the admin API's resource URI.
    pub issuer_canonical: String,
    pub metrics: PrometheusHandle,
    pub auth_throttle: tenants::authn::FailureThrottle,
    /// Commits minted leases in groups.
    pub issues: crate::tokens::commit::IssueWriter,
    /// Wakes the lease sweeper after a revocation.
    pub sweeper: tokio::sync::Notify,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    MasterKey(#[from] keys::seal::SealError),
    #[error("database: {0}")]
    Store(#[from] crate::storage::StoreError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything `launch` needs besides the listener; tests swap the clock.
pub struct Options {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
}

impl Options {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            clock: Arc::new(SystemClock),
        }
    }
}

/// What start-up did that the operator must hear about once.
#[derive(Debug, Default)]
pub struct Started {
    pub bootstrap_secret: Option<String>,
    pub dev_command: Option<String>,
}

/// Builds the state: store, migrations, master key, signing keys, bootstrap.
pub async fn prepare(options: Options) -> Result<(AppState, Started), StartError> {
    let Options { config, clock } = options;
    config.validate()?;
    let (master, source) = load_master_key(&config)?;
    if let MasterKeySource::Generated(path) = &source {
        tracing::warn!(
            path = %path.display(),
            "using a master key generated in the data directory; production must pass MAYFLY_MASTER_KEY"
        );
    }
    let master_previous = match &config.master_key_previous {
        Some(text) => Some(MasterKey::from_text(secrecy::ExposeSecret::expose_secret(text))?),
        None => None,
    };
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;

    let issuer_canonical = tenants::uri::canonicalize(&config.issuer)
        .map_err(|e| crate::config::ConfigError(format!("MAYFLY_ISSUER: {e}")))?;
    let config_auth_limit = config.auth_failure_limit;
    let issues = crate::tokens::commit::IssueWriter::spawn(store.clone());
    let state = AppState(Arc::new(Inner {
        config,
        store,
        keyring: Keyring::default(),
        master,
        master_previous,
        clock,
        issuer_canonical,
        metrics: crate::http::ops::metrics_handle(),
        auth_throttle: tenants::authn::FailureThrottle::new(config_auth_limit),
        sweeper: tokio::sync::Notify::new(),
        issues,
    }));
    bootstrap::ensure_signing_key(&state).await?;
    let started = bootstrap::ensure_admin(&state).await?;
    Ok((state, started))
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn launch(
    options: Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (state, started) = prepare(options).await?;
    announce(&state, &started);
    serve(state, listener, shutdown).await
}

pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let background = [
        crate::bootstrap::spawn_key_refresh(state.clone()),
        crate::keys::rotation::spawn(state.clone()),
        crate::leases::sweeper::spawn(state.clone()),
    ];
    let router = crate::http::router(state.clone());
    let result = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await;
    background.iter().for_each(|t| t.abort());
    state.store.close().await;
    Ok(result?)
}

/// Prints what the operator must see once: the bootstrap secret, the dev command.
pub fn announce(state: &AppState, started: &Started) {
    if let Some(secret) = &started.bootstrap_secret {
        // Printed to the terminal once, deliberately not through the log pipeline.
        println!(
            "\nmayfly: created the global admin client `{}`. Its secret is shown only now:\n\n  {secret}\n",
            tenants::BOOTSTRAP_ADMIN
        );
    }
    if let Some(cmd) = &started.dev_command {
        println!("mayfly --dev: a demo tenant is ready. Mint a token for workflow `release`:\n\n{cmd}\n");
    }
    tracing::info!(issuer = %state.config.issuer, backend = state.store.backend(), "mayfly ready");
}
