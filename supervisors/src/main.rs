//! The `faxd` binary: `serve` runs a node; `sup` runs a maintenance command on a running node;
//! `store` checks or exercises the configured store; `convert` runs the document pipeline;
//! `outbound bench` benchmarks the scheduler; `import kazoo` moves a Kazoo cluster over.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use faxd::config::Config;
use faxd::ids::{AccountId, Db};
use faxd::store::Backend;
use serde_json::json;

/// The node allocates and frees small buffers on many threads at once (HTTP workers, store
/// readers, the runtime's workers); mimalloc keeps those per thread, where glibc's malloc
/// contends for its arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "faxd",
    version,
    about = "faxd: clustered, multi-tenant fax server"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a faxd node in the foreground (Ctrl-C stops it in order).
    Serve {
        /// Configuration file (TOML); FAXD_<SECTION>_<KEY> variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a maintenance command on a running node, e.g. `faxd sup faxd_maintenance status`.
    Sup {
        /// The node's configuration file (its cluster address and cookie).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Cluster address of the node (default: [cluster] listen of the config).
        #[arg(long)]
        node: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// `<module> <function> [args…]`
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Convert a document with faxd's pipeline (to a fax TIFF, a PDF or PNG previews) and
    /// print pages, size and time.
    Convert {
        /// Input document (any accepted type; detected from its content).
        input: PathBuf,
        /// Output file.
        output: PathBuf,
        /// normal, fine or superfine (default from [convert] resolution).
        #[arg(long)]
        resolution: Option<String>,
        /// letter, a4 or legal (default from [convert] page_size).
        #[arg(long)]
        page_size: Option<String>,
        /// tiff (default), pdf or png.
        #[arg(long)]
        format: Option<String>,
        /// Convert this many times in one process (benchmarks: later runs are warm).
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check or exercise the configured store.
    Store {
        #[command(subcommand)]
        command: StoreCmd,
    },
    /// Exercise the outbound engine.
    Outbound {
        #[command(subcommand)]
        command: OutboundCmd,
    },
    /// Import accounts, users, faxboxes, fax callflows, queued jobs and fax history from
    /// another fax platform into the configured store.
    Import {
        #[command(subcommand)]
        command: ImportCmd,
    },
}

#[derive(Subcommand)]
enum ImportCmd {
    /// Copy from a Kazoo 4.x CouchDB. Rerunning it copies only what changed; an interrupted
    /// run is completed by running it again. With the embedded store, stop the node first.
    Kazoo {
        #[arg(long)]
        config: Option<PathBuf>,
        /// CouchDB URL of the Kazoo cluster, e.g. http://user:pass@kazoo-db:5984
        #[arg(long)]
        from: String,
        /// Import only this account and its descendants (repeatable; default: all).
        #[arg(long = "account", value_name = "ID")]
        accounts: Vec<String>,
        /// Read and compare only: print what would change, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum OutboundCmd {
    /// Scheduler benchmark with the null (scripted, zero line time) engine on the
    /// configured store: jobs/s, writes per job, RSS per queued job, dispatch latency.
    Bench {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Jobs for the throughput run.
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        /// Accounts the jobs are spread over.
        #[arg(long, default_value_t = 100)]
        accounts: usize,
        /// Jobs submitted one at a time for the latency run.
        #[arg(long, default_value_t = 300)]
        latency_jobs: usize,
        /// Directory for the workers' fax-ready TIFFs (the node's `file_cache_path`);
        /// default: a new directory under the system temp directory.
        #[arg(long)]
        file_cache: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Check the store: reachability, and for the embedded store an integrity check of the
    /// file, every document and every attachment.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write documents (each with an attachment) as fast as possible into a fresh account
    /// database, printing `ack <id>` after each acknowledged write; ends with throughput.
    Bench {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Documents to write.
        #[arg(long, default_value_t = 1000)]
        docs: u64,
        /// Attachment size per document in bytes (0: none).
        #[arg(long, default_value_t = 4096)]
        attachment_bytes: usize,
        /// Print `ack <id> <n>` after each acknowledged write.
        #[arg(long)]
        print_acks: bool,
    },
}

fn init_tracing(level: &str) {
    faxd_supervisors::logging::init(level);
}

fn load(config: Option<&PathBuf>) -> Result<Config, String> {
    Config::load(config.map(PathBuf::as_path)).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    faxd::memory::limit_malloc_arenas();
    let cli = Cli::parse();
    if let Cmd::Convert {
        input,
        output,
        resolution,
        page_size,
        format,
        repeat,
        config,
    } = &cli.command
    {
        // Blocking work: no runtime needed.
        let args = faxd::convert::cli::ConvertArgs {
            input: input.clone(),
            output: output.clone(),
            resolution: resolution.clone(),
            page_size: page_size.clone(),
            format: format.clone(),
            repeat: *repeat,
        };
        let result = load(config.as_ref()).and_then(|c| faxd::convert::cli::run(&args, c.convert));
        return match result {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("faxd convert: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("faxd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Cmd::Serve { config } => {
                let config = load(config.as_ref())?;
                init_tracing(&config.log.level);
                match faxd::conn_limit::raise_fd_limit() {
                    Ok(n) => tracing::info!(open_files = n, "file descriptor limit"),
                    Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
                }
                faxd_supervisors::node::serve(config)
                    .await
                    .map_err(|e| e.to_string())
            }
            Cmd::Sup {
                config,
                node,
                timeout,
                args,
            } => sup(config, node, timeout, args).await,
            Cmd::Convert { .. } => Ok(()),
            Cmd::Store { command } => match command {
                StoreCmd::Check { config } => store_check(config).await,
                StoreCmd::Bench {
                    config,
                    docs,
                    attachment_bytes,
                    print_acks,
                } => store_bench(config, docs, attachment_bytes, print_acks).await,
            },
            Cmd::Outbound { command } => match command {
                OutboundCmd::Bench {
                    config,
                    jobs,
                    accounts,
                    latency_jobs,
                    file_cache,
                } => {
                    let config = load(config.as_ref())?;
                    init_tracing("warn");
                    let store = faxd_supervisors::node::open_store(&config)
                        .await
                        .map_err(|e| e.to_string())?;
                    faxd_supervisors::bench::run(
                        config,
                        store,
                        jobs,
                        accounts,
                        latency_jobs,
                        file_cache,
                    )
                    .await
                }
            },
            Cmd::Import {
                command:
                    ImportCmd::Kazoo {
                        config,
                        from,
                        accounts,
                        dry_run,
                    },
            } => import_kazoo(config, from, accounts, dry_run).await,
        }
    });
    // actix and the cluster may leave blocking threads behind; don't wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faxd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn sup(
    config: Option<PathBuf>,
    node: Option<String>,
    timeout: u64,
    args: Vec<String>,
) -> Result<(), String> {
    let config = load(config.as_ref())?;
    init_tracing("warn");
    let addr = node.unwrap_or_else(|| config.cluster.listen.clone());
    let cookie = config.cookie(false).map_err(|e| e.to_string())?;
    let args = password_from_stdin(args)?;
    let dialer = faxd_actors::cluster::Dialer(
        faxd_actors::cluster::cluster_tls(&config.cluster)?.map(|t| t.connector),
    );
    let reply = faxd_actors::cluster::run_remote(
        &addr,
        &cookie,
        &dialer,
        args,
        Duration::from_secs(timeout.max(1)),
    )
    .await
    .map_err(|e| e.to_string())?;
    if reply.ok {
        println!("{}", reply.output.trim_end());
        Ok(())
    } else {
        Err(reply.output)
    }
}

/// `crossbar_maintenance create_account … -`: the password is the first line of standard
/// input, so that it appears neither in the process list nor in shell history.
fn password_from_stdin(mut args: Vec<String>) -> Result<Vec<String>, String> {
    let is_create = args.len() == 6
        && args[0] == "crossbar_maintenance"
        && args[1] == "create_account"
        && args[5] == "-";
    if is_create {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        if password.is_empty() {
            return Err("no password on standard input".into());
        }
        args[5] = password;
    }
    Ok(args)
}

async fn import_kazoo(
    config: Option<PathBuf>,
    from: String,
    accounts: Vec<String>,
    dry_run: bool,
) -> Result<(), String> {
    use faxd::import::{ImportError, kazoo};
    let config = load(config.as_ref())?;
    init_tracing("warn");
    let accounts = accounts
        .iter()
        .map(|a| AccountId::parse(a).map_err(|_| ImportError::BadAccountId(a.clone())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if config.store.backend == Backend::Embedded && node_answers(&config.api.listen).await {
        return Err(format!(
            "a faxd node answers on {} (this configuration's API address): with the embedded \
             store, stop the node before importing",
            config.api.listen
        ));
    }
    let source = faxd::import::source::Source::new(&from).map_err(|e| e.to_string())?;
    source.ping().await.map_err(|e| e.to_string())?;
    let store = faxd_supervisors::node::open_store(&config)
        .await
        .map_err(|e| e.to_string())?;
    let options = kazoo::Options { accounts, dry_run };
    let progress = |line: &str| eprintln!("{line}");
    let summary = kazoo::run(&source, &store, &options, &progress)
        .await
        .map_err(|e| format!("import kazoo: {e}"))?;
    print!("{}", summary.render());
    Ok(())
}

/// Whether an HTTP server answers `GET /healthz` on a node's API address (an unspecified
/// address is probed on loopback).
async fn node_answers(listen: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut addr) = listen.parse::<std::net::SocketAddr>() else {
        return false;
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: faxd\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 8];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/"))
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

async fn store_check(config: Option<PathBuf>) -> Result<(), String> {
    let config = load(config.as_ref())?;
    init_tracing("warn");
    match config.store.backend {
        Backend::Embedded => {
            let store = faxd::store::sqlite::SqliteStore::open(&config.node.data_dir)
                .await
                .map_err(|e| e.to_string())?;
            let report = store.check().await.map_err(|e| e.to_string())?;
            println!(
                "store:              embedded ({})\nintegrity:          {}\ndocuments:          {}\nunreadable bodies:  {}\nbad attachments:    {}\norphan attachments: {}",
                store.path().display(),
                report.integrity,
                report.docs,
                report.bad_bodies,
                report.bad_attachments,
                report.orphan_attachments
            );
            if report.ok() {
                Ok(())
            } else {
                Err("the store is inconsistent".into())
            }
        }
        Backend::Couchdb => {
            let store = faxd_supervisors::node::open_store(&config)
                .await
                .map_err(|e| e.to_string())?;
            store.ping().await.map_err(|e| e.to_string())?;
            println!("store: couchdb, reachable");
            Ok(())
        }
    }
}

async fn store_bench(
    config: Option<PathBuf>,
    docs: u64,
    attachment_bytes: usize,
    print_acks: bool,
) -> Result<(), String> {
    use std::io::Write;
    let config = load(config.as_ref())?;
    init_tracing("warn");
    let store = faxd_supervisors::node::open_store(&config)
        .await
        .map_err(|e| e.to_string())?;
    let account = AccountId::generate();
    let db = Db::Account(account.clone());
    store.ensure_db(&db).await.map_err(|e| e.to_string())?;
    println!("bench db {}", db.name());
    let payload = bytes::Bytes::from(vec![0x5au8; attachment_bytes]);
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    for n in 0..docs {
        let doc = store
            .save(&db, json!({"pvt_type": "bench", "n": n}))
            .await
            .map_err(|e| e.to_string())?;
        let id = doc["_id"].as_str().unwrap_or_default().to_string();
        if attachment_bytes > 0 {
            let rev = doc["_rev"].as_str().unwrap_or_default().to_string();
            store
                .put_attachment(
                    &db,
                    &id,
                    Some(&rev),
                    "payload.bin",
                    "application/octet-stream",
                    faxd::store::bytes_stream(payload.clone()),
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        if print_acks {
            let _ = writeln!(out, "ack {id} {n}");
            let _ = out.flush();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = writeln!(
        out,
        "wrote {docs} documents ({} bytes attachment each) in {secs:.2} s: {:.0} docs/s",
        attachment_bytes,
        docs as f64 / secs.max(1e-9)
    );
    Ok(())
}
