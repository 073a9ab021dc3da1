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
    /// Recompute the audit hash chain and report the first broken event; its
    /// length is checked against the recorded count and every checkpoint.
    Verify {
        /// A checkpoint exported earlier with `mayfly audit checkpoint`.
        #[arg(long)]
        checkpoint: Option<std::path::PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Checkpoint the chain now and print the checkpoint (JSON) to keep
    /// outside the database; it is MAC'd under the master key.
    Checkpoint(StoreArgs),
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
            command: AuditCommand::Verify { store: s, .. } | AuditCommand::Checkpoint(s),
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
            let masters = mayfly::app::master_keys(&config)?;
            let store = mayfly::storage::Store::connect(&config.database_url).await?;
            store.migrate().await?;
            let now = mayfly::clock::Clock::now(&mayfly::clock::SystemClock);
            let n = mayfly::keys::rotation::rewrap(&store, &masters, now).await?;
            println!("re-sealed {n} signing key(s) under master key {}", masters.current.id);
            if let Some(previous) = &masters.previous {
                let checkpoints =
                    mayfly::audit::checkpoint::Checkpointer::new(store.clone(), masters.current.checkpoint_key());
                let m = checkpoints.reseal(&previous.checkpoint_key()).await?;
                println!(
                    "re-authenticated {m} audit checkpoint(s) under master key {}",
                    masters.current.id
                );
            }
        }
        Command::Audit {
            command: AuditCommand::Verify { checkpoint, .. },
        } => {
            let store = mayfly::storage::Store::connect(&config.database_url).await?;
            let exported: Vec<mayfly::audit::checkpoint::Checkpoint> = match checkpoint {
                Some(path) => vec![
                    serde_json::from_str(
                        &std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?,
                    )
                    .with_context(|| format!("{} is not a checkpoint", path.display()))?,
                ],
                None => Vec::new(),
            };
            // Without the master key the chain and lengths are still checked,
            // but not whether checkpoints are authentic.
            let key = mayfly::app::master_keys(&config)
                .ok()
                .map(|m| m.current.checkpoint_key());
            if key.is_none() {
                eprintln!("no master key: checkpoints are compared but not authenticated");
            }
            let report = mayfly::audit::AuditLog::new(store)
                .verify(key.as_ref(), &exported)
                .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.ok {
                std::process::exit(1);
            }
        }
        Command::Audit {
            command: AuditCommand::Checkpoint(_),
        } => {
            let store = mayfly::storage::Store::connect(&config.database_url).await?;
            let key = mayfly::app::master_keys(&config)?.current.checkpoint_key();
            let now = mayfly::clock::Clock::now(&mayfly::clock::SystemClock);
            let checkpoint = mayfly::audit::checkpoint::Checkpointer::new(store, key)
                .write(now)
                .await?;
            println!("{}", serde_json::to_string_pretty(&checkpoint)?);
        }
    }
    Ok(())
}
