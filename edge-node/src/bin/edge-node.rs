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
    /// Overrides a gateway's `fingerprint`: `FP` when the config has one gateway, `NAME=FP`
    /// (its name or address) for any; repeatable.
    #[arg(long, value_name = "[NAME=]FP")]
    gateway_fingerprint: Vec<String>,
    /// Print this node's id (creating its key if needed) and exit.
    #[arg(long)]
    print_node_id: bool,
}

// jemalloc, as the gateway: glibc malloc took 13 % of the node's CPU answering from its cache
// under load (loadtests/RESULTS.md, "the allocator").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    daemon::logging::init_tracing();
    let mut config = edge_node::config::Config::load(&args.config)?;
    for given in &args.gateway_fingerprint {
        let (which, fp) = match given.rsplit_once('=') {
            Some((name, fp)) => (Some(name), fp),
            None => (None, given.as_str()),
        };
        let link = match which {
            // A name first, an address only when no name matches.
            Some(name) => match config.gateways.iter().position(|g| g.label() == name) {
                Some(i) => config.gateways.get_mut(i),
                None => config.gateways.iter_mut().find(|g| g.address == name),
            },
            None if config.gateways.len() == 1 => config.gateways.first_mut(),
            None => anyhow::bail!(
                "--gateway-fingerprint: the config has several gateways; give NAME=FP"
            ),
        };
        let Some(link) = link else {
            anyhow::bail!("--gateway-fingerprint {given}: no gateway named so in the config");
        };
        link.fingerprint = fp.to_string();
    }
    if !args.gateway_fingerprint.is_empty() {
        config.validate(&args.config.display().to_string())?;
    }
    daemon::runtime::build(config.worker_threads)
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
