//! The house: every service is built once here, from explicit parts, and
//! `AppState` holds them. Start-up: open the store, migrate, load keys,
//! bootstrap; then serve until shutdown, with the key schedule, the key
//! refresh and the sweeper running beside the router.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::audit::AuditLog;
use crate::audit::checkpoint::Checkpointer;
use crate::audit::export::{Exporter, Sink};
use crate::audit::tlog::TransparencyLog;
use crate::bootstrap::{self, Bootstrap, Started};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, DpopNonce, SignerConfig};
use crate::delegation::Delegation;
use crate::federation::Federation;
use crate::federation::admin::TrustPolicies;
use crate::federation::keys::IssuerKeys;
use crate::grants::TokenEndpoint;
use crate::grants::dpop::{Nonces, ProofCheck};
use crate::keys::pkcs11::Hsm;
use crate::keys::rotation::RotationError;
use crate::keys::seal::{MasterKey, MasterKeySource, load_master_key};
use crate::keys::transit::Transit;
use crate::keys::{Custody, KeyService, MasterKeys, Schedule, Vault};
use crate::leases::{Ledger, Revocations, Sweeper};
use crate::storage::Store;
use crate::tenants::brake::{Brake, FailureLog};
use crate::tenants::{self, Authenticator, Catalog, Directory};
use crate::tokens::issuer::{Issuer, IssuerId, Lifetimes};
use crate::tokens::validate::Verifier;

pub use crate::state::{AppState, Web};

/// Background work that runs beside the router.
struct Background {
    catalog: Arc<Catalog>,
    keys: KeyService,
    sweeper: Sweeper,
    authn: Authenticator,
    tlog: TransparencyLog,
    exporters: Vec<Exporter>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    MasterKey(#[from] crate::keys::seal::SealError),
    #[error("database: {0}")]
    Store(#[from] crate::storage::StoreError),
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    #[error(transparent)]
    Keys(#[from] RotationError),
    #[error(transparent)]
    Transit(#[from] crate::keys::transit::TransitError),
    #[error(transparent)]
    Hsm(#[from] crate::keys::pkcs11::HsmError),
    #[error(transparent)]
    Unseal(#[from] crate::keys::unseal::UnsealError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    AuditLog(#[from] crate::audit::tlog::LogError),
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

/// A prepared application: its services, its background work, and what
/// start-up must announce.
pub struct Prepared {
    pub state: AppState,
    pub started: Started,
    background: Background,
    store: Store,
    /// Held until the server stops (SQLite only).
    data_lock: Option<crate::storage::files::DataDirLock>,
}

/// The master keys from the configuration; a generated one earns a warning.
/// With auto-unseal the current one is unwrapped by transit from `store`.
pub async fn master_keys(config: &Config, store: &Store) -> Result<MasterKeys, StartError> {
    let current = match &config.unseal {
        Some(u) => {
            let transit = Transit::new(u.transit.clone())?;
            crate::keys::unseal::master_key(store, &transit, &u.key, SystemClock.now()).await?
        }
        None => return local_master_keys(config),
    };
    Ok(MasterKeys {
        current,
        previous: previous_master_key(config)?,
    })
}

fn previous_master_key(config: &Config) -> Result<Option<MasterKey>, StartError> {
    Ok(match &config.master_key_previous {
        Some(text) => Some(MasterKey::from_text(secrecy::ExposeSecret::expose_secret(text))?),
        None => None,
    })
}

/// The master keys given directly (or generated in the SQLite data directory).
fn local_master_keys(config: &Config) -> Result<MasterKeys, StartError> {
    let (current, source) = load_master_key(config)?;
    if let MasterKeySource::Generated(path) = &source {
        tracing::warn!(
            path = %path.display(),
            "using a master key generated in the data directory; production must pass MAYFLY_MASTER_KEY"
        );
    }
    Ok(MasterKeys {
        current,
        previous: previous_master_key(config)?,
    })
}

/// Builds every service: store, migrations, master key, signing keys, bootstrap.
pub async fn prepare(options: Options) -> Result<Prepared, StartError> {
    let Options { config, clock } = options;
    config.validate()?;
    // Every outbound TLS client (transit, federation, export) uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A master key given (or generated in the data directory) is checked
    // before anything is opened; one wrapped by transit lives in the store.
    let given = match config.unseal {
        None => Some(local_master_keys(&config)?),
        Some(_) => None,
    };
    let data_lock = crate::storage::files::lock_sqlite_dir(&config.database_url).map_err(crate::config::ConfigError)?;
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;
    bootstrap::recanonicalize_resources(&store).await?;
    let masters = Arc::new(match given {
        Some(m) => m,
        None => master_keys(&config, &store).await?,
    });
    let checkpoint_key = masters.current.checkpoint_key();
    let console_csrf = masters.current.console_csrf_key();
    let dpop_nonce_keys = (
        masters.current.dpop_nonce_key(),
        masters.previous.as_ref().map(|p| p.dpop_nonce_key()),
    );

    let issuer_id = IssuerId {
        url: config.issuer.clone(),
        canonical: tenants::uri::canonicalize(&config.issuer)
            .map_err(|e| crate::config::ConfigError(format!("MAYFLY_ISSUER: {e}")))?,
    };
    let lifetimes = Lifetimes {
        default_ttl: config.default_ttl_seconds(),
        max_ttl: config.max_ttl_seconds(),
    };
    let schedule = Schedule {
        period: config.key_rotation_period,
        lead: config.key_publish_lead,
        max_ttl: config.max_ttl,
    };
    let audit = AuditLog::new(store.clone());
    let sweeper_wake = Arc::new(Notify::new());
    let revocations = Revocations::new(
        store.clone(),
        clock.clone(),
        sweeper_wake.clone(),
        config.max_ttl,
        config.key_publish_lead,
    );
    // The log's key after the signing keys' check: a wrong master key is
    // reported by the keys it would have opened first.
    // Where signing keys live: a PKCS#11 token or transit is reached (and
    // logged in to) here, so a wrong PIN or token stops start-up.
    let mut vault = Vault::local(masters.clone());
    match &config.signer {
        SignerConfig::Local => {}
        SignerConfig::Pkcs11(p) => {
            vault.hsm = Some(Arc::new(Hsm::open(p.clone())?));
            vault.new_keys = Custody::Pkcs11;
        }
        SignerConfig::Transit(t) => {
            vault.transit = Some(Arc::new(Transit::new(t.clone())?));
            vault.new_keys = Custody::Transit;
        }
    }
    let keys = KeyService::new(
        store.clone(),
        Arc::new(vault),
        config.signing_alg,
        schedule,
        clock.clone(),
        revocations.clone(),
    );
    keys.ensure_signing_key().await?;
    let tlog = {
        let mut masters_in_order = vec![&masters.current];
        masters_in_order.extend(masters.previous.as_ref());
        TransparencyLog::open(store.clone(), &config.issuer, &masters_in_order, clock.now()).await?
    };

    let boot = Bootstrap {
        store: &store,
        clock: &clock,
        issuer: &issuer_id,
        admin_secret: config.bootstrap_admin_secret.as_ref(),
        max_ttl: lifetimes.max_ttl,
        change_issuer: config.change_issuer,
    };
    let started = Started {
        bootstrap_secret: bootstrap::ensure_admin(&boot).await?,
        dev_command: match config.dev {
            true => Some(bootstrap::seed_demo(&boot).await?),
            false => None,
        },
    };

    // After bootstrap, so the admin and demo clients are in it from the start.
    let catalog = Catalog::load(store.clone(), clock.clone()).await?;
    let issuer = Issuer::new(
        store.clone(),
        catalog.clone(),
        keys.keyring().clone(),
        audit.clone(),
        clock.clone(),
        issuer_id.clone(),
        lifetimes,
    );
    let directory = Directory::new(
        store.clone(),
        clock.clone(),
        revocations.clone(),
        issuer_id.clone(),
        lifetimes,
        catalog.clone(),
        config.max_clients_per_tenant,
    );
    // One brake and one failure log for every unauthenticated refusal:
    // secrets, assertions and external tokens alike.
    let brake = Arc::new(Brake::new(config.auth_failure_limit));
    let failures = Arc::new(FailureLog::default());
    let reach = crate::federation::reach::Reach::of(&config);
    if reach.allows_loopback() {
        tracing::warn!(
            "plain-http loopback issuers are allowed (MAYFLY_FEDERATION_ALLOW_LOOPBACK or --dev): tests and development only"
        );
    }
    let federation = Federation::new(
        store.clone(),
        catalog.clone(),
        audit.clone(),
        clock.clone(),
        issuer_id.clone(),
        IssuerKeys::new(reach.clone()),
        (brake.clone(), failures.clone()),
    );
    let verifier = Verifier::new(store.clone(), keys.clone(), audit.clone(), &issuer_id, clock.clone());
    let delegation = Arc::new(Delegation::new(
        store.clone(),
        catalog.clone(),
        verifier.clone(),
        federation.clone(),
        audit.clone(),
        clock.clone(),
        issuer_id.clone(),
    ));
    let federation = Arc::new(federation);
    let authn = Arc::new(Authenticator::new(
        catalog.clone(),
        audit.clone(),
        clock.clone(),
        brake.clone(),
        failures.clone(),
    ));
    let issuer = Arc::new(issuer);
    let people = Arc::new(
        crate::people::People::new(
            store.clone(),
            audit.clone(),
            clock.clone(),
            issuer_id.clone(),
            crate::people::providers::LoginProviders::new(
                store.clone(),
                clock.clone(),
                directory.clone(),
                masters.clone(),
                reach.clone(),
                (lifetimes.default_ttl, lifetimes.max_ttl),
            ),
            revocations.clone(),
            (brake, failures),
        )
        .map_err(crate::config::ConfigError)?,
    );
    let state = AppState {
        tokens: Arc::new(TokenEndpoint::new(
            authn.clone(),
            federation.clone(),
            delegation.clone(),
            issuer.clone(),
            Arc::new(ProofCheck::new(
                format!("{}/oauth2/token", issuer_id.url),
                clock.clone(),
                (config.dpop_nonce == DpopNonce::Required).then(|| Nonces::new(dpop_nonce_keys.0, dpop_nonce_keys.1)),
            )),
            people.clone(),
        )),
        people,
        delegation,
        federation,
        trust_policies: Arc::new(TrustPolicies::new(
            store.clone(),
            clock.clone(),
            directory.clone(),
            lifetimes.default_ttl,
            lifetimes.max_ttl,
            reach,
        )),
        verifier: Arc::new(verifier),
        authn,
        activity: Arc::new(crate::activity::Activity::new(
            store.clone(),
            catalog.clone(),
            clock.clone(),
        )),
        directory: Arc::new(directory),
        ledger: Arc::new(Ledger::new(store.clone(), clock.clone())),
        issuer,
        keys: Arc::new(keys.clone()),
        revocations: Arc::new(revocations),
        audit: Arc::new(audit),
        checkpoints: Arc::new(Checkpointer::new(store.clone(), checkpoint_key)),
        tlog: Arc::new(tlog.clone()),
        web: Arc::new(Web {
            ops_listen: config.metrics_listen,
            trusted_proxies: config.trusted_proxies.clone(),
            jwks_max_age: config.jwks_max_age,
            metrics: {
                let handle = crate::http::ops::metrics_handle();
                crate::http::ops::zero_counters();
                handle
            },
            clock: clock.clone(),
            store: store.clone(),
            console_csrf,
        }),
    };
    let background = Background {
        catalog,
        authn: (*state.authn).clone(),
        tlog,
        exporters: config
            .audit_export_file
            .iter()
            .map(|p| Sink::File(p.clone()))
            .chain(config.audit_export_url.iter().map(|u| Sink::Url(u.clone())))
            .map(|sink| Exporter::new(store.clone(), sink))
            .collect(),
        clock: clock.clone(),
        keys,
        sweeper: Sweeper::new(store.clone(), clock, config.lease_retention, sweeper_wake),
    };
    Ok(Prepared {
        state,
        started,
        background,
        store,
        data_lock,
    })
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn launch(
    options: Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let prepared = prepare(options).await?;
    announce(&prepared);
    serve(prepared, listener, shutdown).await
}

pub async fn serve(
    prepared: Prepared,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let Prepared {
        state,
        background,
        store,
        data_lock,
        ..
    } = prepared;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(background.catalog.run());
    tasks.spawn(background.keys.clone().run_refresh());
    tasks.spawn(store.clone().follow_primary());
    if let Some(transit) = background.keys.vault().transit.clone() {
        tasks.spawn(transit.run_renewal());
    }
    tasks.spawn(background.keys.run_schedule());
    tasks.spawn(background.sweeper.run());
    tasks.spawn(background.authn.run_flush());
    tasks.spawn(
        background
            .tlog
            .run(background.clock, crate::audit::tlog::INTEGRATE_EVERY),
    );
    for exporter in background.exporters {
        tasks.spawn(Arc::new(exporter).run(crate::audit::tlog::INTEGRATE_EVERY));
    }
    let serving = crate::http::serve(state, listener, shutdown);
    tokio::pin!(serving);
    // Each background task loops for as long as the server runs: one that
    // ends has panicked. The server goes down with it (re-raising the
    // panic) rather than serve on without its sweeper or key schedule.
    let result = loop {
        tokio::select! {
            result = &mut serving => break result,
            Some(Err(e)) = tasks.join_next() => if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            },
        }
    };
    tasks.abort_all();
    store.close().await;
    drop(data_lock);
    Ok(result?)
}

/// Prints what the operator must see once: the bootstrap secret, the dev command.
pub fn announce(prepared: &Prepared) {
    let started = &prepared.started;
    if let Some(secret) = &started.bootstrap_secret {
        // Printed to the terminal once, deliberately not through the log pipeline.
        println!(
            "\nmayfly: created the global admin client `{}`. Its secret is shown only now:\n\n  {secret}\n",
            tenants::BOOTSTRAP_ADMIN
        );
    }
    if let Some(cmd) = &started.dev_command {
        let issuer = &prepared.state.issuer.id().url;
        println!("mayfly --dev: a demo tenant is ready. Mint a token for workflow `release`:\n\n{cmd}\n");
        println!("The console: {issuer}/console (sign in as mayfly-admin with its secret)\n");
        // The secret is known here only on the start that generated it.
        let export = match &started.bootstrap_secret {
            Some(secret) => format!("  export MAYFLY_ADMIN_SECRET='{secret}'\n"),
            None => "  export MAYFLY_ADMIN_SECRET=…   # printed when the database was created\n".to_string(),
        };
        println!(
            "The admin API (the tour in the README uses $ADMIN; a token lasts its `expires_in`, then mint another):\n\n\
             {export}  ADMIN=$(curl -sf -u \"mayfly-admin:$MAYFLY_ADMIN_SECRET\" -d grant_type=client_credentials \\\n    \
             -d resource={issuer} -d scope=mayfly:admin {issuer}/oauth2/token | jq -er .access_token)\n"
        );
    }
    tracing::info!(
        issuer = %prepared.state.issuer.id().url,
        backend = prepared.store.backend(),
        "mayfly ready"
    );
}
