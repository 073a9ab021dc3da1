//! The `mayfly` binary: telemetry, then subcommands. Everything else lives in
//! the library behind `launch`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use mayfly::config::{Config, ServeArgs};

/// glibc's allocator spent a tenth of a mint's CPU under load (perf, see
/// BENCHMARKS.md); mimalloc's per-thread heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "mayfly",
    version,
    about = "Ephemeral, scoped, revocable credentials for MCP servers"
)]
struct Cli {
    /// Log format: text or json.
    #[arg(long, env = "MAYFLY_LOG_FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default; `mayfly serve --dev` and `mayfly --dev` alike).
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(StoreArgs),
    /// Fetch a token (for CI jobs, agent start-up and sidecars): with a client
    /// id and a secret in MAYFLY_CLIENT_SECRET, or by exchanging the job's or
    /// pod's OIDC token (--github-actions, --gitlab, --subject-token-file).
    Token(Box<mayfly::client::TokenArgs>),
    /// Signing-key tools.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the OpenAPI document (YAML), as committed in openapi.yaml.
    Openapi,
    /// Run an MCP gateway: put MCP servers that take only a static credential
    /// behind mayfly tokens, per-tool policy and the audit log.
    Gateway(Box<mayfly::gateway::GatewayArgs>),
}

/// Where the data is, for the commands that work on an existing store: also
/// accepted after the subcommand (`mayfly audit verify --database-url …`).
#[derive(Debug, Clone, Default, clap::Args)]
struct StoreArgs {
    /// `sqlite://path` or `postgres://…` (default: MAYFLY_DATABASE_URL, else the embedded SQLite).
    #[arg(long)]
    database_url: Option<String>,
    /// File holding the master key (default: MAYFLY_MASTER_KEY or MAYFLY_MASTER_KEY_FILE).
    #[arg(long)]
    master_key_file: Option<std::path::PathBuf>,
}

impl StoreArgs {
    fn apply(self, serve: &mut ServeArgs) {
        if let Some(url) = self.database_url {
            serve.database_url = url;
        }
        if let Some(file) = self.master_key_file {
            serve.master_key_file = Some(file);
        }
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Re-seal every stored signing key under MAYFLY_MASTER_KEY, reading those
    /// still sealed under MAYFLY_MASTER_KEY_PREVIOUS.
    Rewrap(StoreArgs),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the audit record (the chain written before the log, then
    /// the transparency log's tree) and check every stored checkpoint and
    /// those given; report the first finding.
    Verify {
        /// A checkpoint kept outside the database: a signed note from
        /// `mayfly audit checkpoint` (or the JSON of the older chain's).
        #[arg(long)]
        checkpoint: Vec<std::path::PathBuf>,
        /// The log's verifier key to check checkpoints with (default: the stored one).
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the latest signed checkpoint of the audit log, to keep outside
    /// the database.
    Checkpoint(StoreArgs),
    /// Prove one event is in the log a checkpoint kept elsewhere vouches for.
    Prove {
        /// The event's id.
        event: uuid::Uuid,
        /// The signed checkpoint note.
        #[arg(long)]
        checkpoint: std::path::PathBuf,
        /// The log's verifier key (default: the stored one).
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn init_telemetry(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    // Colour only for a person at a terminal, never into a log file or collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// `mayfly token`: credentials come from the environment or the platform, never from flags.
async fn fetch_token(mut args: mayfly::client::TokenArgs) -> anyhow::Result<()> {
    args.client_secret = std::env::var("MAYFLY_CLIENT_SECRET")
        .ok()
        .map(secrecy::SecretString::from);
    let fetcher = mayfly::client::Fetcher::new(&args, |name| std::env::var(name).ok())?;
    if let Some(path) = &args.refresh_into {
        mayfly::client::refresh_into(&fetcher, path).await?;
        return Ok(());
    }
    let answer = fetcher.fetch_retrying().await?;
    let out = mayfly::client::deliver(&args, &answer)?;
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(())
}

/// Errors end the process with one line on stderr (the whole cause chain),
/// never a backtrace, whatever RUST_BACKTRACE says: they are the operator's
/// to read, not a crash report.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mayfly: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_telemetry(cli.log_format);
    // The server's flags may come before `serve` or after it.
    let (command, mut serve) = match cli.command {
        Some(Command::Serve(args)) => (Command::Serve(args.clone()), *args),
        Some(other) => (other, cli.serve),
        None => (Command::Serve(Box::new(cli.serve.clone())), cli.serve),
    };
    // …and the store's after the commands that work on one.
    let store_args = match &command {
        Command::Migrate(s)
        | Command::Keys {
            command: KeysCommand::Rewrap(s),
        }
        | Command::Audit {
            command:
                AuditCommand::Verify { store: s, .. } | AuditCommand::Checkpoint(s) | AuditCommand::Prove { store: s, .. },
        } => Some(s.clone()),
        _ => None,
    };
    if let Some(s) = store_args {
        s.apply(&mut serve);
    }
    if let Command::Token(args) = command {
        return fetch_token(*args).await;
    }
    if let Command::Gateway(args) = command {
        let config = mayfly::gateway::GatewayConfig::from_args(*args, |name| std::env::var(name).ok())?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        return mayfly::gateway::serve(config, listener, shutdown_signal()).await;
    }
    if let Command::Openapi = command {
        print!("{}", mayfly::http::openapi::yaml().map_err(anyhow::Error::msg)?);
        return Ok(());
    }
    let listen = serve.listen;
    // Secrets are read from the environment (or their _FILE), never from flags.
    let config = Config::from_args(serve, |name| std::env::var_os(name))?;
    // Commands that work on an existing database never create one (nor a
    // master key beside it), say in the wrong working directory.
    if matches!(command, Command::Audit { .. } | Command::Keys { .. })
        && let Some(file) = mayfly::storage::files::sqlite_file(&config.database_url)
        && !file.exists()
    {
        anyhow::bail!(
            "no database at {}: run this where the server keeps its data, or set MAYFLY_DATABASE_URL",
            file.display()
        );
    }
    match command {
        Command::Token(_) | Command::Openapi | Command::Gateway(_) => {}
        Command::Serve(_) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            mayfly::launch(mayfly::Options::new(config), listener, shutdown_signal()).await?;
        }
        Command::Migrate(_) => {
            let store = mayfly::storage::Store::connect(&config.database_url).await?;
            store.migrate().await?;
            println!("migrations applied ({})", store.backend());
        }
        Command::Keys {
            command: KeysCommand::Rewrap(_),
        } => {
            let store = mayfly::storage::Store::connect(&config.database_url).await?;
            store.migrate().await?;
            let masters = mayfly::app::master_keys(&config, &store).await?;
            let now = mayfly::clock::Clock::now(&mayfly::clock::SystemClock);
            let n = mayfly::keys::rewrap::rewrap(&store, &masters, now).await?;
            println!("re-sealed {n} signing key(s) under master key {}", masters.current.id);
            if let Some(previous) = &masters.previous {
                if mayfly::audit::tlog::TransparencyLog::reseal(&store, &masters.current, previous).await? {
                    println!("re-sealed the audit log key under master key {}", masters.current.id);
                }
                let checkpoints =
                    mayfly::audit::checkpoint::Checkpointer::new(store.clone(), masters.current.checkpoint_key());
                let m = checkpoints.reseal(&previous.checkpoint_key()).await?;
                println!(
                    "re-authenticated {m} audit checkpoint(s) under master key {}",
                    masters.current.id
                );
            }
            let (n, lost) = mayfly::people::providers::rewrap_secrets(&store, &masters, now).await?;
            println!(
                "re-sealed {n} login provider secret(s) under master key {}",
                masters.current.id
            );
            for provider in lost {
                eprintln!(
                    "login provider {provider}: its client secret opens under neither master key; send it again (PATCH)"
                );
            }
        }
        Command::Audit { command } => audit_command(command, &config).await?,
    }
    Ok(())
}

/// `mayfly audit …`: reads the database; the master key only to check the
/// older chain's MAC'd checkpoints.
async fn audit_command(command: AuditCommand, config: &Config) -> anyhow::Result<()> {
    use mayfly::audit::note::NoteVerifier;
    let store = mayfly::storage::Store::connect(&config.database_url).await?;
    let pinned = |key: Option<String>| -> anyhow::Result<Option<NoteVerifier>> {
        if key.is_none() {
            eprintln!("checking checkpoints with the log key stored in the database; pin it with --key");
        }
        key.map(|k| NoteVerifier::parse(&k).context("--key is not a verifier key"))
            .transpose()
    };
    match command {
        AuditCommand::Verify { checkpoint, key, .. } => {
            let (mut macs, mut notes) = (Vec::new(), Vec::new());
            for path in checkpoint {
                let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                if text.trim_start().starts_with('{') {
                    macs.push(
                        serde_json::from_str(&text)
                            .with_context(|| format!("{} is not a checkpoint", path.display()))?,
                    );
                } else {
                    notes.push(text);
                }
            }
            // Without the master key the chain and lengths are still checked,
            // but not whether the older chain's checkpoints are authentic.
            let mac_key = mayfly::app::master_keys(config, &store)
                .await
                .ok()
                .map(|m| m.current.checkpoint_key());
            if mac_key.is_none() && !macs.is_empty() {
                eprintln!("no master key: chain checkpoints are compared but not authenticated");
            }
            let report = mayfly::audit::AuditLog::new(store)
                .verify(mac_key.as_ref(), &macs, &notes, pinned(key)?.as_ref())
                .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.ok {
                std::process::exit(1);
            }
        }
        AuditCommand::Checkpoint(_) => {
            let head = store.read().await?.conn().latest_tree_head().await?;
            let head =
                head.context("the audit log has no checkpoint yet: it is signed within a second of the first event")?;
            print!("{}", head.note);
        }
        AuditCommand::Prove {
            event, checkpoint, key, ..
        } => {
            let note = std::fs::read_to_string(&checkpoint)
                .with_context(|| format!("cannot read {}", checkpoint.display()))?;
            let report = mayfly::audit::prove::prove(&store, event, &note, pinned(key)?.as_ref()).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.ok {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
