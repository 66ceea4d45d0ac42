//! Scale benchmark of the coordination core (issue 6): a simulated tailnet of N nodes, every
//! map stream open, and what the server spends to deliver a change — the coordinator's work,
//! then for every recipient the JSON encoding, zstd (the map frame) and the ts2021 Noise
//! records — and how many bytes go on the wire.
//!
//! Run: `cargo bench -p weft-tailnet --bench scale` (prints a markdown table). Environment:
//! `SCALE_N` (comma-separated tailnet sizes, default `1000,10000`), `SCALE_ALLOW_ALL_SESSIONS`
//! (how many streams stay open for the allow-all part when N is larger than that; default
//! 100: with every stream of a 10 000-node tailnet open, the allow-all setup alone would take
//! hours, see the notes printed at the end); `SCALE_STORM_N` (default `250,500`): allow-all
//! tailnets whose streams are opened one by one, for the setup cost and memory per node.
//!
//! Single-threaded. Every phase reports the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) and
//! the encoding parts' wall time (`Instant`, accumulated per recipient). HTTP/2 framing between the map frame and the Noise records is not included
//! (9 bytes per DATA frame).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::time::{Duration, Instant};

use weft_controlbase::{accept, ClientHandshake, RecordReader, Transport};
use weft_keys::PrivateKey;
use weft_tailcfg::{
    DiscoPublic, Hostinfo, MachinePublic, MapRequest, MapResponse, NodePublic, RegisterRequest,
    RegisterResponseAuth, Time,
};
use weft_tailnet::{Config, Coordinator, MapReply, RegisterReply, SessionId, Update};

const PER_USER: &str =
    r#"{"acls":[{"action":"accept","src":["autogroup:member"],"dst":["autogroup:self:*"]}]}"#;
const PER_USER_PORTS: &str =
    r#"{"acls":[{"action":"accept","src":["autogroup:member"],"dst":["autogroup:self:22,443"]}]}"#;
const NODES_PER_USER: u32 = 10;

fn t(secs: i64) -> Time {
    Time::from_unix(1_800_000_000 + secs, 0).unwrap()
}

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// This thread's CPU time so far (`CLOCK_THREAD_CPUTIME_ID`, nanosecond resolution).
fn cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap(),
        u32::try_from(t.tv_nsec).unwrap(),
    )
}

/// Resident set size in bytes.
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU time and wall time of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (c0, w0) = (cpu(), now());
    let r = f();
    let (w, c) = (w0.elapsed(), cpu().saturating_sub(c0));
    (r, c, w)
}

fn key_from(n: u32, salt: u8) -> weft_keys::PublicKey {
    let mut b = [salt; 32];
    b[1..5].copy_from_slice(&n.to_le_bytes());
    PrivateKey::from_bytes(b).public_key()
}

struct Dev {
    machine: MachinePublic,
    node: NodePublic,
}

fn dev(n: u32) -> Dev {
    Dev {
        machine: MachinePublic::new(key_from(n, 1)),
        node: NodePublic::new(key_from(n, 2)),
    }
}

/// What delivering a batch of updates cost.
#[derive(Default, Clone)]
struct Cost {
    recipients: usize,
    /// Coordinator CPU (the call and `take_updates`).
    coord: Duration,
    json: Duration,
    zstd: Duration,
    noise: Duration,
    /// CPU of encoding + zstd + Noise together.
    encode_cpu: Duration,
    /// Not part of the costs: zstd of the same JSON with one compression context reused
    /// (`frame::encode_json` makes a new one per message).
    zstd_reused: Duration,
    /// CPU spent on the above and on the one-off check (subtracted from `encode_cpu`).
    extra_cpu: Duration,
    json_bytes: u64,
    frame_bytes: u64,
    wire_bytes: u64,
}

impl Cost {
    fn total(&self) -> Duration {
        self.coord + self.encode_cpu
    }
}

/// The server's side of one ts2021 connection (and the client's, to check what was sealed).
/// One connection serves every recipient: sealing costs the same on any of them.
struct Noise {
    cctx: zstd::bulk::Compressor<'static>,
    server: Transport,
    client: Transport,
    checked: bool,
}

impl Noise {
    fn new() -> Self {
        let k = |b: u8| PrivateKey::from_bytes([b; 32]);
        let (hs, init) = ClientHandshake::start(&k(11), &k(12).public_key(), 130, &k(13)).unwrap();
        let a = accept(&k(12), &init, &k(14)).unwrap();
        Self {
            cctx: zstd::bulk::Compressor::new(weft_tailcfg::frame::COMPRESSION_LEVEL).unwrap(),
            client: hs.finish(&a.response).unwrap(),
            server: a.transport,
            checked: false,
        }
    }

    /// Encodes and seals one message as the server would send it; adds the cost to `c`.
    fn send(&mut self, m: &MapResponse, c: &mut Cost) {
        let t0 = now();
        let json = serde_json::to_vec(m).unwrap();
        let t1 = now();
        let mut frame = Vec::with_capacity(json.len() / 4 + 64);
        weft_tailcfg::frame::encode_json(&json, &mut frame).unwrap();
        let t2 = now();
        let mut wire = Vec::with_capacity(frame.len() + frame.len() / 200 + 32);
        self.server.seal(&frame, &mut wire).unwrap();
        let t3 = now();
        // Outside the costs from here on (its CPU time is taken off by `deliver`).
        let extra = cpu();
        let again = self.cctx.compress(&json).unwrap();
        c.zstd_reused += t3.elapsed();
        assert!(again.len() <= frame.len() + 64);
        c.json += t1 - t0;
        c.zstd += t2 - t1;
        c.noise += t3 - t2;
        c.recipients += 1;
        c.json_bytes += json.len() as u64;
        c.frame_bytes += frame.len() as u64;
        c.wire_bytes += wire.len() as u64;
        if !self.checked {
            // Once: the client opens the records and decodes the frame back to the message.
            self.checked = true;
            let mut r = RecordReader::new();
            r.push(&wire);
            let mut plain = Vec::new();
            while let Some(p) = r.next(&mut self.client).unwrap() {
                plain.extend_from_slice(&p);
            }
            let back = weft_tailcfg::frame::decode_all(&plain, Default::default()).unwrap();
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].peers_changed.len(), m.peers_changed.len());
        }
        c.extra_cpu += cpu().saturating_sub(extra);
    }

    /// Delivers every `Send` in `updates`.
    fn deliver(&mut self, updates: Vec<Update>, c: &mut Cost) {
        let c0 = cpu();
        for u in updates {
            if let Update::Send(_, m) = u {
                self.send(&m, c);
            }
        }
        let extra = c.extra_cpu;
        c.encode_cpu += cpu().saturating_sub(c0).saturating_sub(extra);
        c.extra_cpu = Duration::ZERO;
    }
}

struct Lab {
    c: Coordinator,
    devs: Vec<Dev>,
    sessions: Vec<Option<SessionId>>,
    keys: Vec<String>,
    entropy: u32,
    noise: Noise,
    endpoint: u16,
}

impl Lab {
    fn fresh<const K: usize>(&mut self) -> [u8; K] {
        self.entropy += 1;
        let mut b = [0u8; K];
        b[..4].copy_from_slice(&self.entropy.to_le_bytes());
        b
    }

    fn register(&mut self, n: u32) -> Dev {
        let d = dev(n);
        let user = (n / NODES_PER_USER) as usize % self.keys.len();
        let req = RegisterRequest {
            version: 130,
            node_key: d.node,
            auth: Some(RegisterResponseAuth {
                auth_key: self.keys[user].clone(),
            }),
            hostinfo: Some(Hostinfo {
                hostname: format!("host{n}"),
                os: "linux".into(),
                ..Hostinfo::default()
            }),
            ..RegisterRequest::default()
        };
        let e = self.fresh::<16>();
        let (reply, _ops) = self.c.register(t(1), d.machine, &req, &e).unwrap();
        match reply {
            RegisterReply::Done(r) => assert!(r.machine_authorized),
            RegisterReply::Wait { .. } => panic!("waiting"),
        }
        d
    }

    fn open(&mut self, i: usize) -> (SessionId, MapResponse) {
        let d = &self.devs[i];
        let req = MapRequest {
            version: 130,
            node_key: d.node,
            disco_key: DiscoPublic::new(key_from(u32::try_from(i).unwrap(), 3)),
            stream: true,
            endpoints: vec![format!("198.51.100.{}:41641", i % 250 + 1).parse().unwrap()],
            ..MapRequest::default()
        };
        let (reply, _ops) = self.c.map_request(t(5), d.machine, &req).unwrap();
        match reply {
            MapReply::Stream { session, first } => {
                self.sessions[i] = Some(session);
                (session, *first)
            }
            _ => panic!("no stream"),
        }
    }

    fn sessions_open(&self) -> usize {
        self.sessions.iter().flatten().count()
    }

    /// Node `i` reports a new endpoint in a lite update; the change is delivered.
    fn change(&mut self, i: usize) -> Cost {
        self.endpoint += 1;
        let req = MapRequest {
            version: 130,
            node_key: self.devs[i].node,
            omit_peers: true,
            endpoints: vec![format!("192.0.2.1:{}", self.endpoint).parse().unwrap()],
            ..MapRequest::default()
        };
        let machine = self.devs[i].machine;
        let mut cost = Cost::default();
        let (ups, coord, _) = timed(|| {
            let (r, _ops) = self.c.map_request(t(6), machine, &req).unwrap();
            assert!(matches!(r, MapReply::Lite));
            self.c.take_updates()
        });
        cost.coord = coord;
        self.noise.deliver(ups, &mut cost);
        cost
    }

    /// A new node joins. Returns the cost of its registration (with the deltas that queues for
    /// the peers: a new, offline peer), of opening its stream (the full map and the deltas for
    /// coming online), and of one more full map alone (a non-streaming map request that
    /// changes nothing: the coordinator builds the map and nothing else).
    fn join(&mut self) -> [Cost; 3] {
        let n = u32::try_from(self.devs.len()).unwrap();
        let mut reg = Cost::default();
        let ((d, ups), coord, _) = timed(|| {
            let d = self.register(n);
            (d, self.c.take_updates())
        });
        reg.coord = coord;
        self.noise.deliver(ups, &mut reg);
        self.devs.push(d);
        self.sessions.push(None);
        let i = self.devs.len() - 1;
        let mut stream = Cost::default();
        let ((_, first, ups), coord, _) = timed(|| {
            let (s, first) = self.open(i);
            (s, first, self.c.take_updates())
        });
        stream.coord = coord;
        self.noise.deliver(
            vec![Update::Send(SessionId(0), Box::new(first))],
            &mut stream,
        );
        self.noise.deliver(ups, &mut stream);
        let mut full = Cost::default();
        let d = &self.devs[i];
        let req = MapRequest {
            version: 130,
            node_key: d.node,
            ..MapRequest::default()
        };
        let machine = d.machine;
        let (m, coord, _) = timed(|| match self.c.map_request(t(8), machine, &req).unwrap() {
            (MapReply::Single(m), _) => m,
            _ => panic!("not a single map"),
        });
        assert!(self.c.take_updates().is_empty());
        full.coord = coord;
        self.noise
            .deliver(vec![Update::Send(SessionId(0), m)], &mut full);
        [reg, stream, full]
    }

    fn set_policy(&mut self, text: &str) -> Cost {
        let mut cost = Cost::default();
        let (ups, coord, _) = timed(|| {
            self.c.set_policy(t(7), text).unwrap();
            self.c.take_updates()
        });
        cost.coord = coord;
        self.noise.deliver(ups, &mut cost);
        cost
    }
}

struct Row {
    n: usize,
    policy: &'static str,
    sessions: usize,
    what: String,
    cost: Cost,
}

fn median_by_total(mut v: Vec<Cost>) -> Cost {
    v.sort_by_key(Cost::total);
    v[v.len() / 2].clone()
}

fn join_rows(lab: &mut Lab, n: usize, policy: &'static str, rows: &mut Vec<Row>) {
    let s = lab.sessions_open();
    let [reg, stream, full] = lab.join();
    let what = [
        "join 1/2: register (+ deltas to peers)",
        "join 2/2: open stream (full map + deltas to peers)",
        "a full map alone (non-streaming request)",
    ];
    for (what, cost) in what.into_iter().zip([reg, stream, full]) {
        rows.push(Row {
            n,
            policy,
            sessions: s,
            what: what.into(),
            cost,
        });
    }
}

fn run(n: usize, allow_all_sessions: usize, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let n32 = u32::try_from(n).unwrap();
    let users = n32.div_ceil(NODES_PER_USER);
    let rss0 = rss();
    let c = Coordinator::new(
        Config::new("http://127.0.0.1:8080", "tail.weft"),
        Default::default(),
        PER_USER,
    )
    .unwrap();
    let mut lab = Lab {
        c,
        devs: Vec::new(),
        sessions: Vec::new(),
        keys: Vec::new(),
        entropy: 0,
        noise: Noise::new(),
        endpoint: 1000,
    };
    for u in 0..users {
        let name = format!("user{u}");
        lab.c.create_user(t(0), &name).unwrap();
        let e = lab.fresh::<30>();
        let (k, _) = lab
            .c
            .create_key(t(0), &name, true, false, Vec::new(), 86_400, &e)
            .unwrap();
        lab.keys.push(k.text);
    }
    // Registration, timed per tenth to show how one registration's cost grows.
    let mut tenths = Vec::new();
    let (_, reg_cpu, reg_wall) = timed(|| {
        for chunk in 0..10u32 {
            let lo = chunk * n32 / 10;
            let hi = (chunk + 1) * n32 / 10;
            let (_, c, _) = timed(|| {
                for i in lo..hi {
                    let d = lab.register(i);
                    lab.devs.push(d);
                    lab.sessions.push(None);
                }
                lab.c.take_updates();
            });
            tenths.push(c.as_secs_f64() * 1e6 / f64::from(hi - lo));
        }
    });
    let rss_reg = rss();
    let (_, open_cpu, open_wall) = timed(|| {
        for i in 0..n {
            lab.open(i);
            lab.c.take_updates();
        }
    });
    let rss_open = rss();
    notes.push(format!(
        "N={n}: register {n} nodes (per-user policy, no streams): {:.0} ms CPU ({:.0} ms wall); \
         µs CPU per registration by tenth: {}; open {n} streams: {:.0} ms CPU ({:.0} ms wall); \
         RSS {:.1} MiB → {:.1} (registered) → {:.1} (streams open): {:.2} KiB per node with its stream",
        ms(reg_cpu),
        ms(reg_wall),
        tenths
            .iter()
            .map(|u| format!("{u:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        ms(open_cpu),
        ms(open_wall),
        rss0 as f64 / 1048576.0,
        rss_reg as f64 / 1048576.0,
        rss_open as f64 / 1048576.0,
        (rss_open.saturating_sub(rss0)) as f64 / 1024.0 / n as f64,
    ));

    // ---- per-user policy: a change concerns the owner's 10 nodes -----------------------
    let s = lab.sessions_open();
    let changes: Vec<Cost> = (0..21).map(|k| lab.change(n / 2 + k)).collect();
    rows.push(Row {
        n,
        policy: "per-user",
        sessions: s,
        what: "one node's change (median of 21)".into(),
        cost: median_by_total(changes),
    });
    join_rows(&mut lab, n, "per-user", rows);
    let s = lab.sessions_open();
    rows.push(Row {
        n,
        policy: "per-user",
        sessions: s,
        what: "policy change: per-user ports *→22,443".into(),
        cost: lab.set_policy(PER_USER_PORTS),
    });

    // ---- allow-all: a change concerns every node ---------------------------------------
    if lab.devs.len() > allow_all_sessions {
        // Keep `allow_all_sessions` streams open, spread over the tailnet.
        let total = lab.devs.len();
        let keep: std::collections::BTreeSet<usize> = (0..allow_all_sessions)
            .map(|k| k * total / allow_all_sessions)
            .collect();
        for i in 0..total {
            if keep.contains(&i) {
                continue;
            }
            if let Some(sid) = lab.sessions[i].take() {
                lab.c.map_close(t(6), sid);
            }
        }
        lab.c.take_updates();
    }
    let rss_before_all = rss();
    let s = lab.sessions_open();
    rows.push(Row {
        n,
        policy: "allow-all",
        sessions: s,
        what: "policy change: per-user → allow-all".into(),
        cost: lab.set_policy(weft_policy::DEFAULT_POLICY),
    });
    let rss_all = rss();
    notes.push(format!(
        "N={n}: RSS with {s} streams under per-user {:.1} MiB, after switching to allow-all \
         (each stream now holds {} peers) {:.1} MiB",
        rss_before_all as f64 / 1048576.0,
        lab.devs.len() - 1,
        rss_all as f64 / 1048576.0,
    ));
    // The changing node is one whose stream is open, and one whose is not.
    let changes: Vec<Cost> = (0..3)
        .map(|k| {
            let i = (k * 7919 + 1) % lab.devs.len();
            lab.change(i)
        })
        .collect();
    rows.push(Row {
        n,
        policy: "allow-all",
        sessions: s,
        what: "one node's change (median of 3)".into(),
        cost: median_by_total(changes),
    });
    join_rows(&mut lab, n, "allow-all", rows);
    let s = lab.sessions_open();
    rows.push(Row {
        n,
        policy: "allow-all",
        sessions: s,
        what: "policy change: allow-all → per-user".into(),
        cost: lab.set_policy(PER_USER),
    });
}

/// Allow-all, every stream opened one after the other as clients would connect (each opening
/// is a change every open stream is told about): the setup cost, and memory per node with
/// every stream holding every peer. Prints one `NOTE` line.
fn storm(n: usize) {
    let n32 = u32::try_from(n).unwrap();
    let rss0 = rss();
    let c = Coordinator::new(
        Config::new("http://127.0.0.1:8080", "tail.weft"),
        Default::default(),
        weft_policy::DEFAULT_POLICY,
    )
    .unwrap();
    let mut lab = Lab {
        c,
        devs: Vec::new(),
        sessions: Vec::new(),
        keys: Vec::new(),
        entropy: 0,
        noise: Noise::new(),
        endpoint: 1000,
    };
    for u in 0..n32.div_ceil(NODES_PER_USER) {
        let name = format!("user{u}");
        lab.c.create_user(t(0), &name).unwrap();
        let e = lab.fresh::<30>();
        let (k, _) = lab
            .c
            .create_key(t(0), &name, true, false, Vec::new(), 86_400, &e)
            .unwrap();
        lab.keys.push(k.text);
    }
    let (_, reg_cpu, _) = timed(|| {
        for i in 0..n32 {
            let d = lab.register(i);
            lab.devs.push(d);
            lab.sessions.push(None);
            lab.c.take_updates();
        }
    });
    let rss_reg = rss();
    let mut deltas = 0usize;
    let (_, open_cpu, _) = timed(|| {
        for i in 0..n {
            lab.open(i);
            deltas += lab.c.take_updates().len();
        }
    });
    let rss_open = rss();
    println!(
        "NOTE\tallow-all, N={n}, streams opened one by one: register {:.0} ms CPU, open {n} \
         streams {:.0} ms CPU ({deltas} deltas queued, dropped unencoded); RSS {:.1} MiB → {:.1} \
         (registered) → {:.1} MiB (every stream open, each holding {} peers): {:.1} KiB per \
         node",
        ms(reg_cpu),
        ms(open_cpu),
        rss0 as f64 / 1048576.0,
        rss_reg as f64 / 1048576.0,
        rss_open as f64 / 1048576.0,
        n - 1,
        (rss_open.saturating_sub(rss0)) as f64 / 1024.0 / n as f64,
    );
}

fn row_text(r: &Row) -> String {
    let c = &r.cost;
    format!(
        "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
        r.n,
        r.policy,
        r.sessions,
        r.what,
        c.recipients,
        ms(c.coord),
        ms(c.json),
        ms(c.zstd),
        ms(c.noise),
        ms(c.encode_cpu),
        ms(c.total()),
        c.json_bytes,
        c.frame_bytes,
        c.wire_bytes,
    )
}

/// One tailnet size, in this process: prints `ROW`, `EXT` and `NOTE` lines for the parent.
fn child(n: usize, allow_all_sessions: usize) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    run(n, allow_all_sessions, &mut rows, &mut notes);
    for r in &rows {
        println!("ROW\t{}", row_text(r));
    }
    for r in rows
        .iter()
        .filter(|r| r.policy == "allow-all" && r.what.starts_with("one node's change"))
    {
        let c = &r.cost;
        let per = c.total().as_secs_f64() / c.recipients as f64;
        let coord_per = c.coord.as_secs_f64() / c.recipients as f64;
        println!(
            "EXT\tN={}: one change, per recipient {:.1} µs CPU ({:.1} µs coordinator, {:.1} µs \
             JSON+zstd+Noise), {:.0} wire bytes; measured with {} recipients: {:.0} ms CPU; \
             scaled to all {} nodes: ≈ {:.0} ms CPU, {:.1} MB",
            r.n,
            per * 1e6,
            coord_per * 1e6,
            (per - coord_per) * 1e6,
            c.wire_bytes as f64 / c.recipients as f64,
            c.recipients,
            ms(c.total()),
            r.n,
            per * r.n as f64 * 1e3,
            c.wire_bytes as f64 / c.recipients as f64 * r.n as f64 / 1e6,
        );
    }
    for r in rows
        .iter()
        .filter(|r| r.what.starts_with("one node's change"))
    {
        let c = &r.cost;
        let k = c.recipients as f64;
        println!(
            "EXT\tN={}, {}: zstd per message {:.1} µs with a fresh context per message (as \
             frame::encode_json does), {:.1} µs with one context reused",
            r.n,
            r.policy,
            c.zstd.as_secs_f64() * 1e6 / k,
            c.zstd_reused.as_secs_f64() * 1e6 / k,
        );
    }
    for n in &notes {
        println!("NOTE\t{n}");
    }
}

fn main() {
    let env = |k: &str| std::env::var(k).ok();
    let cap: usize = env("SCALE_ALLOW_ALL_SESSIONS").map_or(200, |s| s.parse().unwrap());
    if let Some(n) = env("SCALE_STORM_CHILD") {
        storm(n.parse().unwrap());
        return;
    }
    if let Some(n) = env("SCALE_CHILD") {
        let n: usize = n.parse().unwrap();
        // Up to 1000 nodes every stream stays open under allow-all; above, `cap` of them.
        child(n, if n <= 1000 { n } else { cap });
        return;
    }
    let sizes = |k: &str, default: &str| -> Vec<usize> {
        env(k)
            .unwrap_or_else(|| default.into())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect()
    };
    let runs = sizes("SCALE_N", "1000,10000")
        .into_iter()
        .map(|n| ("SCALE_CHILD", n))
        .chain(
            sizes("SCALE_STORM_N", "250,500")
                .into_iter()
                .map(|n| ("SCALE_STORM_CHILD", n)),
        );
    // Each size in a fresh process, so that its memory is measured from a clean heap.
    let mut lines = Vec::new();
    for (mode, n) in runs {
        eprintln!("running {mode} N={n} …");
        let (out, _, w) = timed(|| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .env(mode, n.to_string())
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap()
        });
        assert!(out.status.success(), "N={n} failed");
        eprintln!("N={n} done in {:.1} s", w.as_secs_f64());
        lines.extend(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
    }
    println!(
        "| N | policy | streams open | what | recipients | coordinator ms CPU | JSON ms | zstd ms | \
         Noise ms | encode+seal ms CPU | total ms CPU | JSON bytes | frame bytes | wire bytes |"
    );
    println!("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for kind in ["ROW\t", "EXT\t", "NOTE\t"] {
        if kind != "ROW\t" {
            println!();
        }
        for l in &lines {
            if let Some(text) = l.strip_prefix(kind) {
                if kind == "ROW\t" {
                    println!("{text}");
                } else {
                    println!("- {text}");
                }
            }
        }
    }
}
