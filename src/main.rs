//! The `tsrelay` command: run the relay, or check a configuration.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A protocol-translating relay for time-series metrics.
#[derive(Debug, Parser)]
#[command(name = "tsrelay", version, about)]
struct Cli {
    /// Configuration file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "relay.yaml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay (the default).
    Run,
    /// Validate the configuration, print a summary and exit.
    Check,
    /// Read metric names (or lines) on stdin and print where each would go.
    Route {
        /// Print only the names whose placement differs under this configuration.
        #[arg(long)]
        diff: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = tsrelay::config::load(&cli.config)
        .with_context(|| format!("invalid configuration {}", cli.config.display()))?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            print!("{}", tsrelay::summary::describe(&config));
            Ok(())
        }
        Command::Route { diff } => {
            let other = diff
                .map(|path| {
                    tsrelay::config::load(&path)
                        .with_context(|| format!("invalid configuration {}", path.display()))
                })
                .transpose()?;
            let stdin = std::io::stdin().lock();
            let stdout = std::io::BufWriter::new(std::io::stdout().lock());
            tsrelay::explain::run(&config, other.as_ref(), stdin, stdout).context("route")?;
            Ok(())
        }
        Command::Run => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("tsrelay")
                .build()
                .context("cannot start the runtime")?;
            runtime.block_on(tsrelay::relay::run(config, shutdown_signal()))?;
            Ok(())
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::error!(error = %err, "Cannot watch SIGTERM; only SIGINT will stop the relay.");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
