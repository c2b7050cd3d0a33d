//! `faxd-fs-standin`: runs the FreeSWITCH stand-in by hand, e.g. to point a faxd node at it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use faxd::config::LineTime;
use faxd_fs_standin::{Config, StandIn};

/// A FreeSWITCH 1.10.12 stand-in: the event socket with real spandsp faxes.
#[derive(Parser, Debug)]
#[command(name = "faxd-fs-standin", version)]
struct Args {
    /// Address of the ESL listener (faxd's `freeswitch` node address).
    #[arg(long, default_value = "127.0.0.1:8021")]
    listen: SocketAddr,
    /// ESL password.
    #[arg(long, default_value = "ClueCon")]
    password: String,
    /// faxd's inbound socket address (`inbound_listen`), for calls to faxd numbers.
    #[arg(long)]
    faxd_inbound: Option<SocketAddr>,
    /// A number served by faxd (`x` = any digit); repeat for several.
    #[arg(long = "faxd-number")]
    faxd_numbers: Vec<String>,
    /// Run faxes at the speed of a real line instead of as fast as possible.
    #[arg(long)]
    realtime: bool,
    /// Working directory (http_get cache, received faxes of simulated far ends).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Disconnect clients silent for this many seconds.
    #[arg(long, default_value_t = 300)]
    idle_secs: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = Config {
        esl_listen: args.listen,
        password: args.password,
        inbound_listen: args.faxd_inbound,
        faxd_numbers: args.faxd_numbers,
        line_time: if args.realtime {
            LineTime::Realtime
        } else {
            LineTime::Accelerated
        },
        idle_timeout: Duration::from_secs(args.idle_secs.max(1)),
        ..Config::default()
    };
    if let Some(dir) = args.dir {
        config.cache_dir = dir.join("httpcache");
        config.spool_dir = dir.join("spool");
    }
    let standin = StandIn::start(config).await?;
    tracing::info!(addr = %standin.esl_addr(), "fs-standin: event socket listening");
    tokio::signal::ctrl_c().await?;
    standin.shutdown();
    Ok(())
}
