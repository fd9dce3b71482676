//! `edge-node --config FILE`: loads the config and identity, runs the node until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Edge node: cache and chain state in front of upstream full nodes"
)]
struct Args {
    /// Path of the TOML config file.
    #[arg(long)]
    config: PathBuf,
    /// Overrides `gateway.fingerprint` from the config.
    #[arg(long)]
    gateway_fingerprint: Option<String>,
    /// Print this node's id (creating its key if needed) and exit.
    #[arg(long)]
    print_node_id: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    daemon::logging::init_tracing();
    let mut config = edge_node::config::Config::load(&args.config)?;
    if let Some(fp) = &args.gateway_fingerprint {
        config.gateway.fingerprint = fp.clone();
        config.validate(&args.config.display().to_string())?;
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        rt.worker_threads(config.worker_threads);
    }
    rt.enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(args, config))
}

async fn run(args: Args, config: edge_node::config::Config) -> anyhow::Result<()> {
    let identity = proto::identity::Identity::load_or_generate(&config.key_file)
        .context("loading the node identity")?;
    if args.print_node_id {
        println!("{}", identity.node_id());
        return Ok(());
    }
    let node = edge_node::EdgeNode::start(config, identity).await?;
    daemon::shutdown::signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
