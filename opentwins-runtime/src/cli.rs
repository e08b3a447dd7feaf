//! The command line both binaries share: `--config`, `--print-default-config`, environment
//! overrides, logging, and running until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use crate::config::{InstanceConfig, Role};
use crate::instance::Instance;

/// Command-line arguments of `opentwins-edge` and `opentwins-hub`.
#[derive(Debug, Parser)]
pub struct Args {
    /// TOML configuration file; keys it leaves out keep their defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print the default configuration (TOML) and exit.
    #[arg(long)]
    pub print_default_config: bool,
    /// Print the effective configuration (file + environment) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log format on stderr: `text` (colours only on a terminal, none with `NO_COLOR`) or
    /// `json` (one object per line, for log shippers). Also `OPENTWINS_LOG_FORMAT`.
    #[arg(long, value_enum, env = "OPENTWINS_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The configuration `args` and the environment describe.
pub fn load(role: Role, args: &Args) -> anyhow::Result<InstanceConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            InstanceConfig::from_toml(role, &text)
                .with_context(|| format!("in {}", path.display()))?
        }
        None => InstanceConfig::defaults(role),
    };
    config.apply_env(|k| std::env::var(k).ok());
    config.resolve();
    Ok(config)
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`). Text has colours only
/// when stderr is a terminal and `NO_COLOR` is not set.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).try_init()
        }
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// The whole program of a binary: parse, configure, run until a signal, shut down.
pub fn main(role: Role) -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", header(role));
        print!("{}", InstanceConfig::defaults(role).to_toml());
        return Ok(());
    }
    let config = load(role, &args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let scheme = if config.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    runtime.block_on(async {
        let instance = Instance::start(config).await?;
        // Caught from before the announcement on: a SIGTERM right after it is a clean stop.
        let stop = signal();
        if let Some(addr) = instance.http_addr() {
            // One line on stdout that scripts and tests wait for.
            println!("listening on {scheme}://{addr}");
        }
        stop.await;
        tracing::info!("shutting down");
        instance.shutdown().await
    })
}

fn header(role: Role) -> String {
    format!(
        "# opentwins-{} default configuration. Every key is optional: a file needs only what it\n\
         # changes. Environment overrides: OPENTWINS_INSTANCE_ID, OPENTWINS_DATA_DIR,\n\
         # OPENTWINS_LISTEN, OPENTWINS_BROKER_URL (empty disables MQTT), OPENTWINS_HUB_URL.\n\
         # engine.instance_id, mqtt.instance_id and store.path are derived from instance_id and\n\
         # data_dir. See docs/deployment.md.\n\n",
        role.name()
    )
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM received after this call (the handlers are
/// installed when it is called, not when the future is first polled). Needs a runtime.
pub fn signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        async move {
            let term = async {
                match term.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = term => {}
                () = int => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
