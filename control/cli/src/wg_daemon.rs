//! `weft wg` and `weft-wg`: a userspace WireGuard device started exactly like wireguard-go.
//!
//! `weft-wg [-f|--foreground] IFNAME` creates the TUN interface and serves the UAPI on
//! `/var/run/wireguard/IFNAME.sock`. Without `-f` (and without `WG_PROCESS_FOREGROUND=1`, the
//! variable wireguard-go honours) it daemonizes: the parent starts a foreground copy of itself,
//! waits until that copy has created the interface and the UAPI socket, and only then exits —
//! so `wg-quick`, which runs `wg setconf` right after the daemon returns, always finds them.
//! It stops on SIGINT/SIGTERM or when the interface is deleted.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use weft_dataplane::{Engine, EngineConfig};

use crate::packet_filter::Enforcer;

/// Line the foreground child prints on stdout once it is ready.
const READY: &str = "weft-wg ready";
/// How long the parent waits for the child to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Options shared by `weft wg` and `weft-wg`.
#[derive(Debug, clap::Args)]
pub(crate) struct WgArgs {
    /// Stay in the foreground instead of daemonizing.
    #[arg(short = 'f', long = "foreground")]
    pub(crate) foreground: bool,
    /// Tunnel MTU of the new interface.
    #[arg(long, default_value_t = 1420)]
    pub(crate) mtu: u32,
    /// Open the TUN without a virtio-net header: no TSO/USO super-packets, no GRO writes.
    #[arg(long, env = "WEFT_NO_TUN_OFFLOAD")]
    pub(crate) no_tun_offload: bool,
    /// Never send with UDP GSO (`UDP_SEGMENT`).
    #[arg(long, env = "WEFT_NO_GSO")]
    pub(crate) no_gso: bool,
    /// Never receive with UDP GRO.
    #[arg(long, env = "WEFT_NO_GRO")]
    pub(crate) no_gro: bool,
    /// Use one `sendmsg`/`recvmsg` per datagram instead of `sendmmsg`/`recvmmsg`.
    #[arg(long, env = "WEFT_NO_MMSG")]
    pub(crate) no_mmsg: bool,
    /// Kernel I/O backend of the shards: `uring` (one io_uring per shard; falls back to `mmsg`
    /// with a warning where the kernel lacks it) or `mmsg` (`ppoll` + `recvmmsg`/`sendmmsg`).
    /// The default is the one that measured faster in `perf/`.
    #[arg(long, env = "WEFT_IO", value_enum, default_value_t = IoBackend::default())]
    pub(crate) io: IoBackend,
    /// The tailnet packet filter for decrypted packets, from a JSON file
    /// (`{"LocalNets": [...], "PacketFilter": [...]}`, see docs); re-read on SIGHUP. Without
    /// it every packet the peers' allowed IPs admit is delivered, as plain WireGuard does.
    #[arg(long, env = "WEFT_PACKET_FILTER")]
    pub(crate) packet_filter: Option<std::path::PathBuf>,
    /// Attach the XDP junk and handshake-flood filter to this underlay interface (the one the
    /// peers' datagrams arrive on). Off by default.
    #[arg(long, env = "WEFT_XDP_INTERFACE")]
    pub(crate) xdp_interface: Option<String>,
    /// Enforce the packet filter with the userspace matcher only, never the eBPF tc program.
    #[arg(long, env = "WEFT_NO_EBPF")]
    pub(crate) no_ebpf: bool,
    /// Shard threads (TUN queues and UDP sockets); 0 means one per core.
    #[arg(long, env = "WEFT_SHARDS", default_value_t = 0)]
    pub(crate) shards: usize,
    /// Name of the interface to create (at most 15 bytes).
    pub(crate) ifname: String,
}

/// The `--io` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum IoBackend {
    /// One io_uring per shard.
    Uring,
    /// `ppoll` with `recvmmsg`/`sendmmsg`.
    Mmsg,
}

impl Default for IoBackend {
    fn default() -> Self {
        if weft_dataplane::engine::DEFAULT_IO_URING {
            IoBackend::Uring
        } else {
            IoBackend::Mmsg
        }
    }
}

/// Runs the device (or the daemonizing parent).
pub(crate) fn run(args: &WgArgs) -> Result<()> {
    let foreground =
        args.foreground || std::env::var("WG_PROCESS_FOREGROUND").is_ok_and(|v| v == "1");
    if !foreground {
        return daemonize(args);
    }
    init_logging();
    let mut config = EngineConfig::new(args.ifname.clone());
    config.mtu = args.mtu;
    config.tun_offload = !args.no_tun_offload;
    config.udp.gso &= !args.no_gso;
    config.udp.gro &= !args.no_gro;
    config.udp.mmsg &= !args.no_mmsg;
    config.shards = args.shards;
    config.io_uring = args.io == IoBackend::Uring;
    // A filter file that cannot be used stops the start: better no device than an open one.
    let filter = args
        .packet_filter
        .as_deref()
        .map(crate::packet_filter::load)
        .transpose()?;
    let engine = Engine::start(&config)
        .with_context(|| format!("cannot create interface {}", args.ifname))?;
    let enforcer = filter.map(|loaded| {
        let mut e = Enforcer::new(
            engine.packet_filter(),
            engine.ifname(),
            engine.ifindex(),
            !args.no_ebpf,
        );
        e.apply(&loaded);
        Arc::new(Mutex::new(e))
    });
    let xdp =
        args.xdp_interface
            .as_deref()
            .and_then(|ifname| match crate::xdp::Xdp::attach(ifname) {
                Ok(x) => {
                    engine.set_observer(x.clone());
                    Some(x)
                }
                Err(e) => {
                    tracing::warn!(
                    interface = ifname,
                    error = format!("{e:#}"),
                    "cannot attach the XDP filter; junk and floods are handled after the socket"
                );
                    None
                }
            });
    let stopper = engine.stopper();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .context("cannot install signal handlers")?;
    let filter_path = args.packet_filter.clone();
    let reloads = enforcer.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == signal_hook::consts::SIGHUP {
                    reload(filter_path.as_deref(), reloads.as_deref());
                    continue;
                }
                tracing::info!(signal = sig, "shutting down");
                stopper.stop();
                break;
            }
        })
        .context("cannot start the signal thread")?;
    tracing::info!(
        interface = engine.ifname(),
        uapi = format!("/var/run/wireguard/{}.sock", engine.ifname()),
        "weft-wg running"
    );
    if std::env::var_os("WEFT_WG_READY_PIPE").is_some() {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{READY}");
        let _ = out.flush();
    }
    let result = engine.run().context("device stopped with an error");
    if let Some(x) = &xdp {
        x.log_counters();
    }
    if let Some(e) = &enforcer {
        let e = e.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((passed, dropped)) = e.kernel_counters() {
            tracing::info!(passed, dropped, "eBPF packet filter counters");
        }
    }
    result?;
    Ok(())
}

/// SIGHUP: re-reads the packet filter file; a file that cannot be used leaves the filter in
/// force as it is.
fn reload(path: Option<&std::path::Path>, enforcer: Option<&Mutex<Enforcer>>) {
    let (Some(path), Some(enforcer)) = (path, enforcer) else {
        tracing::info!("SIGHUP: no --packet-filter file to reload");
        return;
    };
    match crate::packet_filter::load(path) {
        Ok(loaded) => {
            enforcer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .apply(&loaded);
        }
        Err(e) => tracing::error!(
            error = format!("{e:#}"),
            "packet filter not reloaded; the previous one stays"
        ),
    }
}

fn daemonize(args: &WgArgs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find own executable")?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("WG_PROCESS_FOREGROUND", "1")
        .env("WEFT_WG_READY_PIPE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the daemon process")?;
    let stdout = child.stdout.take().context("daemon has no stdout pipe")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let ok = BufReader::new(stdout).read_line(&mut line).is_ok() && line.trim() == READY;
        let _ = tx.send(ok);
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let status = child.wait().ok();
            bail!(
                "weft-wg failed to start interface {} (exit status {:?}); run with -f to see why",
                args.ifname,
                status.and_then(|s| s.code())
            )
        }
        Err(_) => {
            let _ = child.kill();
            bail!("weft-wg did not become ready within {READY_TIMEOUT:?}")
        }
    }
}

fn init_logging() {
    // LOG_LEVEL is wireguard-go's variable (verbose, error, silent); RUST_LOG wins if set.
    let default = match std::env::var("LOG_LEVEL").as_deref() {
        Ok("verbose") | Ok("debug") => "debug",
        Ok("error") => "error",
        Ok("silent") => "off",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: logs redirected to a file or a journal stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
