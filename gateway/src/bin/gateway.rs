//! `gateway --config FILE`: loads the config and identity, serves until SIGINT/SIGTERM.
//! `gateway --config FILE --print-fingerprint` prints the key fingerprint nodes must pin.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Geo-aware JSON-RPC gateway in front of QUIC edge nodes"
)]
struct Args {
    /// Path of the TOML config file.
    #[arg(long)]
    config: PathBuf,
    /// Print the gateway's key fingerprint (creating the key if needed) and exit.
    #[arg(long)]
    print_fingerprint: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    daemon::logging::init_tracing();
    let config = gateway::config::Config::load(&args.config)?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if config.server.worker_threads > 0 {
        rt.worker_threads(config.server.worker_threads);
    }
    rt.enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(args, config))
}

async fn run(args: Args, config: gateway::config::Config) -> anyhow::Result<()> {
    let identity = proto::identity::Identity::load_or_generate(&config.quic.key_file)
        .context("loading the gateway identity")?;
    if args.print_fingerprint {
        println!("{}", identity.fingerprint());
        return Ok(());
    }
    let gw = gateway::Gateway::start(config, identity).await?;
    // SIGHUP reloads the geo databases at once (they are also polled for changes).
    let geo = gw.app.geo.clone();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match geo.reload_async().await {
                Ok(()) => tracing::info!("geo databases reloaded (SIGHUP)"),
                Err(e) => {
                    tracing::error!(error = %e, "geo reload failed; the old database keeps serving");
                }
            }
        }
    });
    daemon::shutdown::signal().await;
    tracing::info!("shutting down");
    gw.shutdown().await;
    Ok(())
}
