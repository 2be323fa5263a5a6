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
    /// Convert points on stdin from one protocol to another, on stdout.
    Translate {
        /// Input protocol (graphite_plaintext, graphite_pickle, kairosdb_telnet, kairosdb_rest).
        #[arg(long)]
        from: String,
        /// Output protocol (same choices).
        #[arg(long)]
        to: String,
        /// Use this upstream's templates and tags from the configuration (-c).
        #[arg(long)]
        upstream: Option<String>,
        /// A Graphite template (repeatable), as in an upstream's `templates`.
        #[arg(long)]
        template: Vec<String>,
        /// A static tag `k=v` (repeatable), as in `add_tags`.
        #[arg(long)]
        add_tag: Vec<String>,
        /// The tag given to points without tags, `k=v`.
        #[arg(long)]
        default_tag: Option<String>,
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
    let load = || {
        tsrelay::config::load(&cli.config)
            .with_context(|| format!("invalid configuration {}", cli.config.display()))
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Translate {
            from,
            to,
            upstream,
            template,
            add_tag,
            default_tag,
        } => {
            let protocol = |name: &str| {
                serde_yaml_ng::from_str::<tsrelay::codec::Protocol>(name)
                    .with_context(|| format!("unknown protocol {name:?}"))
            };
            let (from, to) = (protocol(&from)?, protocol(&to)?);
            let translation = match upstream {
                Some(name) => {
                    load()?
                        .upstreams
                        .into_iter()
                        .find(|u| u.name == name)
                        .with_context(|| {
                            format!("no upstream {name:?} in {}", cli.config.display())
                        })?
                        .translation
                }
                None => translation_from_flags(&template, &add_tag, default_tag.as_deref())?,
            };
            let stdout = std::io::BufWriter::new(std::io::stdout().lock());
            let report =
                tsrelay::convert::run(from, to, &translation, std::io::stdin().lock(), stdout)?;
            eprintln!(
                "translated {} of {} points; rejected {} input records; {} points the output cannot carry",
                report.written,
                report.decoded,
                report.rejects.total(),
                report.skipped.total()
            );
            for (reason, n) in report.rejects.counts() {
                eprintln!("  rejected {reason}: {n}");
            }
            for (reason, n) in report.skipped.counts() {
                eprintln!("  dropped {}: {n}", reason.as_str());
            }
            for error in &report.errors {
                eprintln!("  {error}");
            }
            Ok(())
        }
        Command::Check => {
            let config = load()?;
            print!("{}", tsrelay::summary::describe(&config));
            Ok(())
        }
        Command::Route { diff } => {
            let config = load()?;
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
            let config = load()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("tsrelay")
                .build()
                .context("cannot start the runtime")?;
            runtime.block_on(tsrelay::relay::run(
                config,
                Some(cli.config.clone()),
                shutdown_signal(),
            ))?;
            Ok(())
        }
    }
}

/// The translation described by `translate`'s flags.
fn translation_from_flags(
    templates: &[String],
    add_tags: &[String],
    default_tag: Option<&str>,
) -> anyhow::Result<tsrelay::translate::Translation> {
    let tag = |text: &str| {
        text.split_once('=')
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .with_context(|| format!("{text:?} is not key=value"))
    };
    Ok(tsrelay::translate::Translation {
        templates: templates
            .iter()
            .map(|t| tsrelay::translate::Template::parse(t))
            .collect::<Result<_, _>>()?,
        add_tags: add_tags.iter().map(|t| tag(t)).collect::<Result<_, _>>()?,
        default_tag: default_tag.map(tag).transpose()?,
        graphite_tags: tsrelay::translate::GraphiteTags::Keep,
        histograms: tsrelay::translate::HistogramPolicy::Keep,
    })
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
