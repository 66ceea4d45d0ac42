//! `weft-coordd`: the coordination server, and the admin CLI that talks to it.
//!
//! `weft-coordd serve` keeps its state in `--state-dir` (the SQLite database, the server's
//! Noise key, the policy file and the admin socket); every other subcommand sends one
//! command to a running server over the admin socket in the same directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use weft_coordd::admin::{self, Request};
use weft_coordd::config::{self, ServeArgs};
use weft_coordd::server::{Endpoints, Server, Timing};

#[derive(Parser)]
#[command(
    name = "weft-coordd",
    version,
    about = "weft's coordination server (Tailscale control protocol)"
)]
struct Cli {
    /// Where the server keeps its state (database, key, policy, admin socket).
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/weft-coordd",
        env = "WEFT_COORDD_STATE_DIR"
    )]
    state_dir: PathBuf,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Users.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Pre-auth keys.
    #[command(subcommand, name = "preauthkeys", visible_alias = "keys")]
    Keys(KeysCmd),
    /// Nodes.
    #[command(subcommand)]
    Nodes(NodesCmd),
    /// API keys of the HTTP admin API (`POST /api/v1/command`).
    #[command(subcommand)]
    Apikeys(ApikeysCmd),
    /// Interactive logins waiting for approval.
    Pending,
    /// The ACL policy.
    #[command(subcommand)]
    Policy(PolicyCmd),
}

#[derive(Subcommand)]
enum ApikeysCmd {
    /// Create an API key (printed once).
    Create {
        /// How long it stays valid (`30d`, `12h`).
        #[arg(long, default_value = "90d")]
        expiration: String,
    },
    /// List API keys (never their secrets).
    List,
    /// Revoke an API key by its prefix.
    Revoke { prefix: String },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Check a policy file against the running server's tailnet, without applying it (with
    /// no server running, against an empty tailnet).
    Check { file: PathBuf },
    /// Check a policy file, make it live and store it as the server's policy file.
    Set { file: PathBuf },
    /// Read the server's policy file again (as SIGHUP does).
    Reload,
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Create a user.
    Create { name: String },
    /// List users.
    List,
    /// Delete a user that has no nodes and no keys.
    Delete { name: String },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a pre-auth key (printed once).
    Create(KeyArgs),
    /// List keys (never their secrets).
    List,
    /// Revoke a key by its prefix.
    Revoke { prefix: String },
}

#[derive(Args)]
struct KeyArgs {
    /// Owner of the nodes registered with it.
    #[arg(long)]
    user: String,
    /// Usable any number of times.
    #[arg(long)]
    reusable: bool,
    /// Nodes registered with it are ephemeral.
    #[arg(long)]
    ephemeral: bool,
    /// Tags for its nodes (comma-separated, `tag:name`).
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// How long it stays usable (`30m`, `12h`, `7d`).
    #[arg(long, default_value = "1h")]
    expiration: String,
}

#[derive(Subcommand)]
enum NodesCmd {
    /// List nodes.
    List,
    /// Approve a pending interactive login (the id at the end of its AuthURL).
    Register {
        /// Owner.
        #[arg(long)]
        user: String,
        auth_id: String,
    },
    /// Delete a node.
    Delete { id: i64 },
    /// Expire a node's key now (the node must log in again).
    Expire { id: i64 },
    /// Set the routes approved for a node (replaces the previous approval; none clears it).
    ApproveRoutes { id: i64, routes: Vec<String> },
    /// Rename a node's MagicDNS name.
    Rename { id: i64, name: String },
    /// Replace a node's tags (`tag:a,tag:b`; nothing to untag).
    Tag {
        id: i64,
        #[arg(value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Turn a node's key expiry off (`--never`) or set it (`--in 90d`).
    Expiry {
        id: i64,
        /// The key never expires.
        #[arg(long, conflicts_with = "r#in")]
        never: bool,
        /// The key expires this long from now.
        #[arg(long = "in")]
        r#in: Option<String>,
    },
}

/// Open client connections at most (each official client keeps one).
const MAX_CONNECTIONS: usize = 16_384;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let req = match cli.cmd {
        Cmd::Serve(args) => return serve(&cli.state_dir, *args).await,
        Cmd::Users(UsersCmd::Create { name }) => Request::UsersCreate { name },
        Cmd::Users(UsersCmd::List) => Request::UsersList,
        Cmd::Users(UsersCmd::Delete { name }) => Request::UsersDelete { name },
        Cmd::Keys(KeysCmd::Create(k)) => Request::KeysCreate {
            user: k.user,
            reusable: k.reusable,
            ephemeral: k.ephemeral,
            tags: k.tags,
            valid_secs: config::parse_duration(&k.expiration)?,
        },
        Cmd::Keys(KeysCmd::List) => Request::KeysList,
        Cmd::Keys(KeysCmd::Revoke { prefix }) => Request::KeysRevoke { prefix },
        Cmd::Nodes(NodesCmd::List) => Request::NodesList,
        Cmd::Nodes(NodesCmd::Register { user, auth_id }) => {
            Request::NodesRegister { user, auth_id }
        }
        Cmd::Nodes(NodesCmd::Delete { id }) => Request::NodesDelete { id },
        Cmd::Nodes(NodesCmd::Expire { id }) => Request::NodesExpire { id },
        Cmd::Nodes(NodesCmd::ApproveRoutes { id, routes }) => {
            Request::NodesApproveRoutes { id, routes }
        }
        Cmd::Nodes(NodesCmd::Rename { id, name }) => Request::NodesRename { id, name },
        Cmd::Nodes(NodesCmd::Tag { id, tags }) => Request::NodesTag { id, tags },
        Cmd::Nodes(NodesCmd::Expiry { id, never, r#in }) => Request::NodesExpiry {
            id,
            secs: match (never, r#in) {
                (true, _) => None,
                (false, Some(d)) => Some(config::parse_duration(&d)?),
                (false, None) => bail!("give --never or --in DURATION"),
            },
        },
        Cmd::Apikeys(ApikeysCmd::Create { expiration }) => Request::ApikeysCreate {
            valid_secs: config::parse_duration(&expiration)?,
        },
        Cmd::Apikeys(ApikeysCmd::List) => Request::ApikeysList,
        Cmd::Apikeys(ApikeysCmd::Revoke { prefix }) => Request::ApikeysRevoke { prefix },
        Cmd::Pending => Request::PendingList,
        Cmd::Policy(PolicyCmd::Reload) => Request::PolicyReload,
        Cmd::Policy(PolicyCmd::Set { file }) => Request::PolicySet {
            text: std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?,
        },
        Cmd::Policy(PolicyCmd::Check { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let sock = cli.state_dir.join(config::ADMIN_SOCKET);
            if !sock.exists() {
                let policy =
                    weft_policy::Policy::load(&text, &weft_policy::Tailnet::new(Vec::new()))
                        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                drop(policy);
                println!(
                    "ok (checked against an empty tailnet: no server at {})",
                    sock.display()
                );
                return Ok(());
            }
            Request::PolicyCheck { text }
        }
    };
    let resp = admin::call(&cli.state_dir.join(config::ADMIN_SOCKET), &req).await?;
    if !resp.ok {
        bail!("{}", resp.error);
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&resp.result)?);
        return Ok(());
    }
    print_human(&req, &resp.result);
    Ok(())
}

fn print_human(req: &Request, v: &serde_json::Value) {
    let s = |v: &serde_json::Value, k: &str| match v.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(","),
        Some(x) if !x.is_null() => x.to_string(),
        _ => String::new(),
    };
    let rows = v.as_array().cloned().unwrap_or_default();
    match req {
        Request::KeysCreate { .. } | Request::ApikeysCreate { .. } => println!("{}", s(v, "key")),
        Request::ApikeysList => {
            println!("{:<14} {:<22} REVOKED", "PREFIX", "EXPIRES");
            for r in rows {
                println!(
                    "{:<14} {:<22} {}",
                    s(&r, "prefix"),
                    s(&r, "expiration"),
                    s(&r, "revoked")
                );
            }
        }
        Request::NodesRegister { .. } => println!("registered node {}", s(v, "id")),
        Request::UsersList => {
            println!("{:<6} {:<30} CREATED", "ID", "NAME");
            for r in rows {
                println!(
                    "{:<6} {:<30} {}",
                    s(&r, "id"),
                    s(&r, "name"),
                    s(&r, "created")
                );
            }
        }
        Request::KeysList => {
            println!(
                "{:<14} {:<16} {:<9} {:<10} {:<6} {:<8} {:<22} TAGS",
                "PREFIX", "USER", "REUSABLE", "EPHEMERAL", "USED", "REVOKED", "EXPIRES"
            );
            for r in rows {
                println!(
                    "{:<14} {:<16} {:<9} {:<10} {:<6} {:<8} {:<22} {}",
                    s(&r, "prefix"),
                    s(&r, "user"),
                    s(&r, "reusable"),
                    s(&r, "ephemeral"),
                    s(&r, "used"),
                    s(&r, "revoked"),
                    s(&r, "expiration"),
                    s(&r, "tags")
                );
            }
        }
        Request::NodesList => {
            println!(
                "{:<5} {:<20} {:<14} {:<34} {:<8} {:<8} ROUTES (approved/primary)",
                "ID", "NAME", "USER", "ADDRESSES", "ONLINE", "EXPIRED"
            );
            for r in rows {
                println!(
                    "{:<5} {:<20} {:<14} {:<34} {:<8} {:<8} {}/{}",
                    s(&r, "id"),
                    s(&r, "name"),
                    s(&r, "user"),
                    s(&r, "addresses"),
                    s(&r, "online"),
                    s(&r, "expired"),
                    s(&r, "approved_routes"),
                    s(&r, "primary_routes")
                );
            }
        }
        Request::PendingList => {
            for r in rows {
                println!("{}  {}", s(&r, "auth_id"), s(&r, "hostname"));
            }
        }
        _ => println!("ok"),
    }
}

async fn serve(state_dir: &Path, args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let args = args.resolve()?;
    let prepared = config::prepare(state_dir, &args)?;
    let store = weft_coordstore::open(&prepared.database)
        .with_context(|| "opening the database (--database)".to_owned())?;
    let server = Server::new(
        prepared.config.clone(),
        store,
        prepared.policy_text.clone(),
        Some(prepared.policy_path.clone()),
        Timing {
            // The client drops a stream after 120 s of silence; with up to 9 s of jitter, 100 s
            // is the most that stays safely inside it.
            keepalive: std::time::Duration::from_secs(
                args.keepalive_secs.unwrap_or(50).clamp(1, 100),
            ),
            ..Timing::default()
        },
    )
    .context("starting the coordinator")?;
    admin::listen(Arc::clone(&server), &state_dir.join(config::ADMIN_SOCKET))
        .context("admin socket")?;
    tokio::spawn(Arc::clone(&server).run_housekeeping());
    {
        let server = Arc::clone(&server);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match server.reload_policy() {
                    Ok(()) => tracing::info!("policy reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "policy refused; the previous one stays in force")
                    }
                }
            }
        });
    }
    let listen = args.listen_addr();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(
        listen = %listen,
        url = %prepared.config.server_url,
        state_dir = %state_dir.display(),
        "weft-coordd serving"
    );
    let key = Arc::new(prepared.control_key);
    let endpoints: Arc<dyn weft_coord::Handler> = Arc::new(Endpoints(server));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // A bound on open connections: each holds a task, buffers and possibly a map stream.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (s, _) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors, typically: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!("connection limit reached; refusing a connection");
                    continue;
                };
                let _ = s.set_nodelay(true);
                let (key, endpoints) = (Arc::clone(&key), Arc::clone(&endpoints));
                tokio::spawn(async move {
                    let _ = weft_coord::serve_connection(s, key, endpoints).await;
                    drop(permit);
                });
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("weft-coordd stopping");
    Ok(())
}
