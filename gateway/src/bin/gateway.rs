//! `gateway --config FILE`: loads the config and identity, serves until SIGINT/SIGTERM.
//! `gateway --config FILE --print-fingerprint` prints the key fingerprint nodes must pin.
//! `gateway --hash-key KEY` prints the SHA-256 a tenants file stores for an API key.
//! `MERIDIAN_REDIS_URL`, when set, replaces `tenants.redis_url` (scripts start Redis on a free
//! port).

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
    #[arg(long, required_unless_present = "hash_key")]
    config: Option<PathBuf>,
    /// Print the SHA-256 of an API key, as `key_sha256` in the tenants file takes it, and exit
    /// (`-`: read the key from stdin, keeping it out of the shell history and process list).
    #[arg(long, value_name = "KEY")]
    hash_key: Option<String>,
    /// Print the gateway's key fingerprint (creating the key if needed) and exit.
    #[arg(long)]
    print_fingerprint: bool,
}

// jemalloc: the request path allocates small, short-lived buffers across tasks, where glibc
// malloc spent an eighth of the gateway's CPU under load, much of it merging free chunks
// (loadtests/RESULTS.md, "the allocator").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(key) = &args.hash_key {
        let key = match key.as_str() {
            "-" => {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_string()
            }
            k => k.to_string(),
        };
        println!("{}", gateway::tenants::hash_key_hex(&key));
        return Ok(());
    }
    daemon::logging::init_tracing();
    let path = args.config.clone().expect("clap requires --config");
    let mut config = gateway::config::Config::load(&path)?;
    if let Ok(url) = std::env::var("MERIDIAN_REDIS_URL") {
        config.tenants.redis_url = Some(url);
        config.validate(&path.display().to_string())?;
    }
    daemon::runtime::build(config.server.worker_threads)
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
    // SIGHUP reloads the geo databases and the tenants file at once (both are also polled for
    // changes).
    let geo = gw.app.geo.clone();
    let tenancy = gw.app.tenancy.clone();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = tenancy.reload_off_runtime("SIGHUP").await;
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
