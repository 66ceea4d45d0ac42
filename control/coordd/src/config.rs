//! `weft-coordd serve`'s flags, and what they turn into: the coordinator's [`Config`], the
//! state directory's files, the DERP map.
//!
//! Defaults are chosen so that `weft-coordd serve --state-dir DIR` alone is a working lab
//! server: Tailscale's address ranges, MagicDNS under `tail.weft`, 180-day keys, the allow-all
//! policy written out to `DIR/policy.hujson` (and said so), a Noise key generated once.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use weft_coord::ControlKey;
use weft_keys::PrivateKey;
use weft_tailcfg::{DerpMap, DerpNode, DerpRegion, DnsRecord};
use weft_tailnet::addr::{V4Range, V6Range};
use weft_tailnet::{Config, DnsSettings};

/// The admin socket's file name in the state directory.
pub const ADMIN_SOCKET: &str = "admin.sock";
/// The database's file name.
pub const DB_FILE: &str = "weft-coordd.sqlite";
/// The Noise private key's file name.
pub const KEY_FILE: &str = "control.key";
/// The default policy file name.
pub const POLICY_FILE: &str = "policy.hujson";
/// The region id weft uses for a DERP map built from `--derp`.
pub const DERP_REGION: i64 = 900;

/// Flags of `weft-coordd serve`. Each may also be set in the `--config` file (TOML, the same
/// names with `_` for `-`); a flag given on the command line wins over the file.
#[derive(Debug, Clone, Default, Args, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeArgs {
    /// Config file (TOML). Flags override what it sets.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080] (plain HTTP; official clients accept
    /// `http://` control URLs on private and loopback addresses).
    #[arg(long)]
    pub listen: Option<String>,
    /// The URL clients use to reach this server [default: `http://<listen>`].
    #[arg(long)]
    pub server_url: Option<String>,
    /// MagicDNS base domain [default: tail.weft].
    #[arg(long)]
    pub base_domain: Option<String>,
    /// Policy file (HuJSON) [default: `<state-dir>/policy.hujson`, written with the allow-all
    /// default when missing].
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// DERP map (Tailscale's JSON `DERPMap`) to send to nodes.
    #[arg(long, conflicts_with = "derp")]
    pub derp_map: Option<PathBuf>,
    /// One DERP relay (`https://host:port`, e.g. a `weft-derper`) as the only region.
    #[arg(long)]
    pub derp: Option<String>,
    /// STUN port of the `--derp` relay (-1: none) [default: 3478].
    #[arg(long, allow_negative_numbers = true)]
    pub derp_stun_port: Option<i64>,
    /// Certificate pin of the `--derp` relay (`sha256-raw:<hex>`, as `weft-derper` prints it).
    #[arg(long)]
    pub derp_cert_pin: Option<String>,
    /// Let clients skip TLS verification for the `--derp` relay (labs only).
    #[arg(long)]
    pub derp_insecure: bool,
    /// IPv4 prefix addresses come from [default: 100.64.0.0/10].
    #[arg(long)]
    pub v4_prefix: Option<String>,
    /// IPv6 prefix addresses come from [default: fd7a:115c:a1e0::/48].
    #[arg(long)]
    pub v6_prefix: Option<String>,
    /// Turn MagicDNS off.
    #[arg(long)]
    pub no_magic_dns: bool,
    /// Global nameserver (IP or DoH URL); repeatable.
    #[arg(long)]
    pub nameserver: Vec<String>,
    /// Search domain; repeatable.
    #[arg(long)]
    pub search_domain: Vec<String>,
    /// Split DNS, `DOMAIN=NS[,NS…]` (no nameservers: answered by MagicDNS); repeatable.
    #[arg(long)]
    pub split_dns: Vec<String>,
    /// Extra DNS record, `NAME=IP`; repeatable.
    #[arg(long)]
    pub extra_record: Vec<String>,
    /// Node key lifetime for user devices (`180d`; `0` = never) [default: 180d].
    #[arg(long)]
    pub key_expiry: Option<String>,
    /// Delete ephemeral nodes after this long offline [default: 30m].
    #[arg(long)]
    pub ephemeral_timeout: Option<String>,
    /// Keep-alive interval on map streams, seconds (a 0–9 s jitter is added) [default: 50].
    #[arg(long)]
    pub keepalive_secs: Option<u64>,
    /// Database: a path or `sqlite:PATH` (SQLite), or a PostgreSQL URL / libpq string
    /// (`postgres://user@host/weft`, `host=/var/run/postgresql dbname=weft`)
    /// [default: `<state-dir>/weft-coordd.sqlite`].
    #[arg(long)]
    pub database: Option<String>,
}

impl ServeArgs {
    /// These flags over `file`'s settings: a flag given wins; lists given on the command line
    /// replace the file's.
    pub fn over(self, file: ServeArgs) -> ServeArgs {
        fn list(a: Vec<String>, b: Vec<String>) -> Vec<String> {
            if a.is_empty() {
                b
            } else {
                a
            }
        }
        ServeArgs {
            config: self.config,
            listen: self.listen.or(file.listen),
            server_url: self.server_url.or(file.server_url),
            base_domain: self.base_domain.or(file.base_domain),
            policy: self.policy.or(file.policy),
            derp_map: self.derp_map.or(file.derp_map),
            derp: self.derp.or(file.derp),
            derp_stun_port: self.derp_stun_port.or(file.derp_stun_port),
            derp_cert_pin: self.derp_cert_pin.or(file.derp_cert_pin),
            derp_insecure: self.derp_insecure || file.derp_insecure,
            v4_prefix: self.v4_prefix.or(file.v4_prefix),
            v6_prefix: self.v6_prefix.or(file.v6_prefix),
            no_magic_dns: self.no_magic_dns || file.no_magic_dns,
            nameserver: list(self.nameserver, file.nameserver),
            search_domain: list(self.search_domain, file.search_domain),
            split_dns: list(self.split_dns, file.split_dns),
            extra_record: list(self.extra_record, file.extra_record),
            key_expiry: self.key_expiry.or(file.key_expiry),
            ephemeral_timeout: self.ephemeral_timeout.or(file.ephemeral_timeout),
            keepalive_secs: self.keepalive_secs.or(file.keepalive_secs),
            database: self.database.or(file.database),
        }
    }

    /// Reads `--config` (if given) and applies these flags over it.
    ///
    /// # Errors
    /// When the file cannot be read or has an unknown key or a bad value.
    pub fn resolve(self) -> anyhow::Result<ServeArgs> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let file: ServeArgs =
            toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))?;
        Ok(self.over(file))
    }

    /// The listen address in force.
    pub fn listen_addr(&self) -> String {
        self.listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8080".into())
    }
}

/// What `serve` starts from.
pub struct Prepared {
    /// The coordinator's settings.
    pub config: Config,
    /// The database spec for `weft_coordstore::open`.
    pub database: String,
    /// The policy path.
    pub policy_path: PathBuf,
    /// The policy text.
    pub policy_text: String,
    /// The Noise key.
    pub control_key: ControlKey,
}

/// `30s`, `15m`, `12h`, `7d`, or plain seconds.
///
/// # Errors
/// When the text is not such a duration.
pub fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: i64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => bail!("bad duration {s:?} (use s, m, h or d)"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("duration {s:?} too long"))
}

fn parse_prefix(s: &str) -> anyhow::Result<(IpAddr, u8)> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("{s:?} is not a prefix"))?;
    Ok((a.parse()?, l.parse()?))
}

/// Creates the state directory (0700), loads or makes the Noise key (0600), reads or writes
/// the policy, and builds the config.
///
/// # Errors
/// On any file or flag problem, naming the file or flag.
pub fn prepare(state_dir: &Path, a: &ServeArgs) -> anyhow::Result<Prepared> {
    if state_dir.exists() {
        // An existing directory is the operator's: say so if others can read it, but leave
        // its mode alone (every file weft-coordd writes in it is 0600 anyway).
        let mode = fs::metadata(state_dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %state_dir.display(), mode = format!("{mode:o}"), "state directory is accessible to other users");
        }
    } else {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        fs::set_permissions(state_dir, fs::Permissions::from_mode(0o700))?;
    }
    let control_key = ControlKey::new(load_or_make_key(&state_dir.join(KEY_FILE))?);

    let policy_path = a
        .policy
        .clone()
        .unwrap_or_else(|| state_dir.join(POLICY_FILE));
    let policy_text = if policy_path.exists() {
        fs::read_to_string(&policy_path)
            .with_context(|| format!("reading {}", policy_path.display()))?
    } else {
        fs::write(&policy_path, weft_policy::DEFAULT_POLICY)
            .with_context(|| format!("writing {}", policy_path.display()))?;
        tracing::warn!(
            path = %policy_path.display(),
            "no policy file: wrote and using the allow-all default (every device may reach every other); edit it and send SIGHUP or run `weft-coordd reload-policy`"
        );
        weft_policy::DEFAULT_POLICY.to_owned()
    };

    let server_url = a
        .server_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", a.listen_addr()));
    let base_domain = a.base_domain.clone().unwrap_or_else(|| "tail.weft".into());
    let mut cfg = Config::new(server_url, base_domain.trim_end_matches('.'));
    let (v4, l4) =
        parse_prefix(a.v4_prefix.as_deref().unwrap_or("100.64.0.0/10")).context("--v4-prefix")?;
    let (v6, l6) = parse_prefix(a.v6_prefix.as_deref().unwrap_or("fd7a:115c:a1e0::/48"))
        .context("--v6-prefix")?;
    cfg.v4 = match v4 {
        IpAddr::V4(v) => V4Range::new(v, l4).ok_or_else(|| anyhow!("--v4-prefix too small"))?,
        IpAddr::V6(_) => bail!("--v4-prefix must be IPv4"),
    };
    cfg.v6 = match v6 {
        IpAddr::V6(v) => V6Range::new(v, l6).ok_or_else(|| anyhow!("--v6-prefix too small"))?,
        IpAddr::V4(_) => bail!("--v6-prefix must be IPv6"),
    };
    cfg.dns = DnsSettings {
        magic_dns: !a.no_magic_dns,
        nameservers: a.nameserver.clone(),
        split: a
            .split_dns
            .iter()
            .map(|s| {
                let (d, ns) = s
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--split-dns {s:?}: DOMAIN=NS"))?;
                Ok((
                    d.to_owned(),
                    ns.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ))
            })
            .collect::<anyhow::Result<_>>()?,
        search_domains: a.search_domain.clone(),
        extra_records: a
            .extra_record
            .iter()
            .map(|s| {
                let (name, ip) = s
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--extra-record {s:?}: NAME=IP"))?;
                let ip: IpAddr = ip
                    .parse()
                    .with_context(|| format!("--extra-record {s:?}"))?;
                Ok(DnsRecord {
                    name: name.to_owned(),
                    record_type: if ip.is_ipv4() { "A" } else { "AAAA" }.into(),
                    value: ip.to_string(),
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let expiry =
        parse_duration(a.key_expiry.as_deref().unwrap_or("180d")).context("--key-expiry")?;
    cfg.key_expiry_secs = (expiry > 0).then_some(expiry);
    cfg.ephemeral_timeout_secs = parse_duration(a.ephemeral_timeout.as_deref().unwrap_or("30m"))
        .context("--ephemeral-timeout")?;
    cfg.derp_map = derp_map(a)?;
    if cfg.derp_map.regions.is_empty() {
        tracing::warn!("no DERP map (--derp or --derp-map): nodes that cannot reach each other directly will not connect");
    }
    Ok(Prepared {
        config: cfg,
        database: a
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", state_dir.join(DB_FILE).display())),
        policy_path,
        policy_text,
        control_key,
    })
}

fn load_or_make_key(path: &Path) -> anyhow::Result<PrivateKey> {
    if path.exists() {
        let mode = fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
            tracing::warn!(path = %path.display(), "key file was readable by others; narrowed to 0600");
        }
        let text = fs::read_to_string(path)?;
        return PrivateKey::from_hex(text.trim())
            .map_err(|e| anyhow!("{}: not a private key: {e}", path.display()));
    }
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| anyhow!("random: {e}"))?;
    let key = PrivateKey::from_bytes(b);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(format!("{}\n", key.to_hex()).as_bytes())?;
    f.sync_all()?;
    Ok(key)
}

fn derp_map(a: &ServeArgs) -> anyhow::Result<DerpMap> {
    if let Some(p) = &a.derp_map {
        let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: not a DERPMap", p.display()));
    }
    let Some(url) = &a.derp else {
        return Ok(DerpMap::default());
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("derp://"))
        .unwrap_or(url)
        .trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_matches(['[', ']']),
            p.parse::<i64>().context("--derp port")?,
        ),
        _ => (rest, 443),
    };
    let mut node = DerpNode {
        name: format!("{DERP_REGION}a"),
        region_id: DERP_REGION,
        host_name: host.to_owned(),
        derp_port: port,
        stun_port: a.derp_stun_port.unwrap_or(3478),
        insecure_for_tests: a.derp_insecure,
        cert_name: a.derp_cert_pin.clone().unwrap_or_default(),
        ..DerpNode::default()
    };
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            node.ipv4 = ip.to_string();
            node.ipv6 = "none".into();
        }
        Ok(IpAddr::V6(ip)) => {
            node.ipv6 = ip.to_string();
            node.ipv4 = "none".into();
        }
        Err(_) => {}
    }
    let mut map = DerpMap::default();
    map.regions.insert(
        DERP_REGION,
        Some(DerpRegion {
            region_id: DERP_REGION,
            region_code: "weft".into(),
            region_name: "weft relay".into(),
            nodes: vec![node],
            ..DerpRegion::default()
        }),
    );
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let file: ServeArgs = toml::from_str(
            "listen = \"0.0.0.0:9000\"\nbase_domain = \"corp.example\"\nnameserver = [\"1.1.1.1\"]\nkeepalive_secs = 30\n",
        )
        .unwrap();
        let flags = ServeArgs {
            listen: Some("127.0.0.1:8080".into()),
            ..ServeArgs::default()
        };
        let merged = flags.over(file);
        assert_eq!(merged.listen_addr(), "127.0.0.1:8080");
        assert_eq!(merged.base_domain.as_deref(), Some("corp.example"));
        assert_eq!(merged.nameserver, vec!["1.1.1.1".to_owned()]);
        assert_eq!(merged.keepalive_secs, Some(30));
        assert!(
            toml::from_str::<ServeArgs>("lisen = \"x\"").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }
}
