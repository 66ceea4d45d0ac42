//! Official Tailscale clients (tailscaled 1.96.4, installed by `scripts/realclients.sh`) in a
//! tailnet run by weft: `weft-coordd` for control, `weft-derper` (TLS, certificate pinned in
//! the DERP map) for relay. Nodes join with a pre-auth key, see each other online, reach each
//! other (`tailscale ping`, a TSMP ping through WireGuard), get the MagicDNS names weft gave
//! them; a deleted node leaves its peer's map, a logged-out node leaves it too.
//!
//! Everything runs in a namespace the test makes: loopback, plus a veth to a second, empty
//! namespace that carries the default route the client insists on (it pauses without one).
//! Nothing can leave: the only links lead to namespaces this test made. The clients run with
//! `--no-logs-no-support`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use support::Tsd;
use weft_testkit::{serial, tailscale, veth, wait_until, ChildGuard, Netns, TempDir};

struct Lab {
    ns: Netns,
    _gw: Netns,
    dir: TempDir,
    clients: PathBuf,
    _derper: ChildGuard,
    _coordd: ChildGuard,
    nodes: Vec<ChildGuard>,
    key: String,
}

impl Lab {
    fn new(force_derp: bool) -> Result<Self> {
        let clients = support::clients_dir()?;
        let derper_bin = support::derper_bin()?;
        let ns = Netns::new("rc")?;
        let gw = Netns::new("rcgw")?;
        veth(&ns, "rc0", &gw, "rc1")?;
        ns.addr_add("rc0", "10.233.7.1/24")?;
        gw.addr_add("rc1", "10.233.7.254/24")?;
        ns.link_up("rc0")?;
        gw.link_up("rc1")?;
        ns.ip(&["route", "add", "default", "via", "10.233.7.254"])?;
        let dir = TempDir::new("realclients")?;

        let verify: &[&str] = if force_derp {
            &["--verify-url", "http://127.0.0.1:8080/verify"]
        } else {
            &[]
        };
        let (derper, pin) =
            tailscale::start_derper(&ns, &derper_bin, "127.0.0.1", &dir.join("derper"), verify)?;
        let coord_state = dir.join("coord");
        let coordd = support::start_coordd(
            &ns,
            &coord_state,
            "127.0.0.1:8080",
            "https://127.0.0.1:3340",
            &pin,
        )?;
        let key = support::alice_key(&coord_state)?;
        Ok(Self {
            ns,
            _gw: gw,
            dir,
            clients,
            _derper: derper,
            _coordd: coordd,
            nodes: Vec::new(),
            key,
        })
    }

    /// The admin CLI (the socket is a file: no namespace needed).
    fn admin(&self, args: &[&str]) -> Result<String> {
        support::admin(&self.dir.join("coord"), args)
    }

    fn tsd(&self, node: &str) -> Tsd {
        Tsd::new(&self.clients, self.dir.path(), node)
    }

    /// `tailscale --socket … ARGS` in the namespace; stdout, or an error with stderr.
    fn ts(&self, node: &str, args: &[&str], timeout: Duration) -> Result<String> {
        self.tsd(node).ts(&self.ns, args, timeout)
    }

    fn start(&mut self, node: &str, force_derp: bool) -> Result<()> {
        self.start_with(node, force_derp, &[], &[])
    }

    /// Starts `tailscaled` for `node` (extra daemon flags in `daemon`) and logs it in with the
    /// pre-auth key (extra `tailscale up` flags in `up`).
    fn start_with(
        &mut self,
        node: &str,
        force_derp: bool,
        daemon: &[&str],
        up: &[&str],
    ) -> Result<()> {
        let tsd = self.tsd(node);
        let mut cmd = tsd.command(&self.ns, support::USERSPACE)?;
        cmd.args(daemon);
        if force_derp {
            cmd.env("TS_DEBUG_ALWAYS_USE_DERP", "1");
        }
        self.nodes.push(tsd.spawn(cmd)?);
        tsd.up(&self.ns, "http://127.0.0.1:8080", &self.key, up)
    }

    fn status(&self, node: &str) -> Result<serde_json::Value> {
        self.tsd(node).status(&self.ns)
    }

    /// The peers `node` has in its netmap: (host name, DNS name, online).
    fn peers(&self, node: &str) -> Result<Vec<(String, String, bool)>> {
        self.tsd(node).peers(&self.ns)
    }
}
fn mesh(force_derp: bool) -> Result<()> {
    let _serial = serial();
    let mut lab = Lab::new(force_derp)?;
    lab.start("n1", force_derp)?;
    lab.start("n2", force_derp)?;
    for (a, b) in [("n1", "n2"), ("n2", "n1")] {
        wait_until(
            &format!("{a} sees {b} online"),
            Duration::from_secs(30),
            Duration::from_millis(300),
            || Ok(lab.peers(a)? == vec![(b.to_owned(), format!("{b}.tail.weft."), true)]),
        )?;
    }
    let n2_ip = lab.ts("n2", &["ip", "-4"], Duration::from_secs(10))?;
    let n2_ip = n2_ip.trim();
    assert_eq!(n2_ip, "100.64.0.2");
    let ping = lab.ts(
        "n1",
        &["ping", "--c", "10", "--until-direct=false", n2_ip],
        Duration::from_secs(30),
    )?;
    assert!(ping.contains("pong from n2 (100.64.0.2)"), "{ping}");
    if force_derp {
        assert!(ping.contains("via DERP(weft)"), "not relayed: {ping}");
    }
    let tsmp = lab.ts(
        "n1",
        &["ping", "--tsmp", "--c", "3", n2_ip],
        Duration::from_secs(30),
    )?;
    assert!(tsmp.contains("via TSMP"), "{tsmp}");

    // A deleted node leaves its peer's map (the issue asks for within 5 s).
    let nodes: serde_json::Value = serde_json::from_str(&lab.admin(&["--json", "nodes", "list"])?)?;
    let id2 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "n2")
        .and_then(|n| n["id"].as_i64())
        .unwrap();
    let t0 = weft_testkit::now();
    lab.admin(&["nodes", "delete", &id2.to_string()])?;
    wait_until(
        "n2 gone from n1's map",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || Ok(lab.peers("n1")?.is_empty()),
    )?;
    eprintln!("deleted node left its peer's map after {:?}", t0.elapsed());

    // A logged-out node leaves its peers' maps too.
    lab.start("n3", force_derp)?;
    wait_until(
        "n1 sees n3",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || Ok(lab.peers("n1")?.iter().any(|p| p.0 == "n3" && p.2)),
    )?;
    let t0 = weft_testkit::now();
    lab.ts("n3", &["logout"], Duration::from_secs(20))?;
    wait_until(
        "n3 gone from n1's map",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || Ok(lab.peers("n1")?.is_empty()),
    )?;
    eprintln!(
        "logged-out node left its peer's map after {:?}",
        t0.elapsed()
    );
    let listed = lab.admin(&["--json", "nodes", "list"])?;
    let listed: serde_json::Value = serde_json::from_str(&listed)?;
    let n3 = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "n3")
        .unwrap();
    assert_eq!(n3["expired"], true, "{listed}");
    Ok(())
}

#[test]
fn netns_realclients_join_see_reach_and_leave() {
    mesh(false).unwrap();
}

#[test]
fn netns_realclients_relayed_through_weft_derper_with_verify() {
    mesh(true).unwrap();
}

/// Interactive login: `tailscale up` without a key gets an AuthURL and waits; an admin approves
/// the pending login with the CLI; the client's follow-up request is released and it joins.
#[test]
fn netns_realclients_interactive_login_waits_for_admin() {
    let _serial = serial();
    let mut lab = Lab::new(false).unwrap();
    lab.start("n1", false).unwrap();
    let n4 = lab.tsd("n4");
    let cmd = n4.command(&lab.ns, support::USERSPACE).unwrap();
    lab.nodes.push(n4.spawn(cmd).unwrap());
    let sock = n4.sock();
    let ts = lab.clients.join("tailscale");
    let mut up = ChildGuard::spawn(
        "tailscale up n4",
        lab.ns.command(&[
            ts.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
            "up",
            "--login-server=http://127.0.0.1:8080",
            "--hostname=n4",
            "--accept-dns=false",
            "--timeout=60s",
        ]),
    )
    .unwrap();
    let mut auth_id = String::new();
    wait_until(
        "a pending login",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let pending: serde_json::Value =
                serde_json::from_str(&lab.admin(&["--json", "pending"])?)?;
            auth_id = pending
                .as_array()
                .and_then(|a| a.first())
                .and_then(|p| p["auth_id"].as_str())
                .unwrap_or_default()
                .to_owned();
            Ok(!auth_id.is_empty())
        },
    )
    .unwrap();
    assert!(
        up.log()
            .contains(&format!("http://127.0.0.1:8080/register/{auth_id}")),
        "the client shows the AuthURL: {}",
        up.log()
    );
    assert!(
        lab.peers("n1").unwrap().is_empty(),
        "not a member before approval"
    );
    lab.admin(&["nodes", "register", "--user", "alice", &auth_id])
        .unwrap();
    wait_until(
        "tailscale up returns",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || Ok(up.try_status()?.is_some()),
    )
    .unwrap();
    assert!(up.try_status().unwrap().unwrap().success(), "{}", up.log());
    wait_until(
        "n1 sees n4",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || Ok(lab.peers("n1")? == vec![("n4".into(), "n4.tail.weft.".into(), true)]),
    )
    .unwrap();
}

/// `curl` through n1's SOCKS5 proxy into the tailnet: whether `url` answered within 4 s.
fn reachable(lab: &Lab, url: &str) -> Result<bool> {
    support::reachable_via_socks(&lab.ns, url)
}

/// A policy change reaches the nodes and changes what they can reach; an approved subnet
/// route appears in the peer's map.
#[test]
fn netns_realclients_policy_changes_reachability_and_routes_appear() {
    let _serial = serial();
    let mut lab = Lab::new(false).unwrap();
    lab.start_with("n1", false, &["--socks5-server=127.0.0.1:1055"], &[])
        .unwrap();
    lab.start_with("n2", false, &[], &["--advertise-routes=10.99.0.0/24"])
        .unwrap();
    // n2 serves HTTP on the namespace's loopback; userspace tailscaled hands inbound tailnet
    // connections to 127.0.0.1.
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from n2\n").unwrap();
    let _http = lab
        .ns
        .spawn(
            "http.server",
            &[
                "python3",
                "-m",
                "http.server",
                "8000",
                "--bind",
                "127.0.0.1",
                "--directory",
                www.to_str().unwrap(),
            ],
        )
        .unwrap();
    wait_until(
        "n1 sees n2",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || Ok(lab.peers("n1")?.iter().any(|p| p.0 == "n2" && p.2)),
    )
    .unwrap();
    wait_until(
        "n1 reaches n2:8000",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || reachable(&lab, "http://100.64.0.2:8000/"),
    )
    .unwrap();

    // Only port 22 between alice's devices: the peer stays visible, port 8000 is refused.
    let only_ssh = lab.dir.join("only-ssh.hujson");
    std::fs::write(
        &only_ssh,
        "// alice's devices reach each other on 22 only\n{\"acls\": [{\"action\": \"accept\", \"src\": [\"alice@\"], \"dst\": [\"alice@:22\"]},],}\n",
    )
    .unwrap();
    lab.admin(&["policy", "check", only_ssh.to_str().unwrap()])
        .unwrap();
    lab.admin(&["policy", "set", only_ssh.to_str().unwrap()])
        .unwrap();
    wait_until(
        "n2:8000 refused under the new policy",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || Ok(!reachable(&lab, "http://100.64.0.2:8000/")?),
    )
    .unwrap();
    assert!(
        lab.peers("n1").unwrap().iter().any(|p| p.0 == "n2"),
        "still a peer (port 22 is allowed)"
    );
    // A broken policy is refused and the one in force stays.
    let broken = lab.dir.join("broken.hujson");
    std::fs::write(&broken, "{\"acls\": [{\"action\": \"accept\", \"src\": [\"nobody@\"], \"dst\": [\"*:*\"]}], \"tests\": [{\"src\": \"alice@\", \"accept\": [\"alice@:80\"]}]}").unwrap();
    let err = lab
        .admin(&["policy", "set", broken.to_str().unwrap()])
        .unwrap_err();
    assert!(err.to_string().contains("policy refused"), "{err}");
    // Nothing allowed: the peers vanish from each other's maps.
    let none = lab.dir.join("none.hujson");
    std::fs::write(&none, "{\"acls\": []}").unwrap();
    lab.admin(&["policy", "set", none.to_str().unwrap()])
        .unwrap();
    wait_until(
        "peers vanish under deny-all",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || Ok(lab.peers("n1")?.is_empty()),
    )
    .unwrap();
    // Back to allow-all, then approve n2's advertised route: it appears in n1's map.
    let all = lab.dir.join("all.hujson");
    std::fs::write(&all, weft_policy::DEFAULT_POLICY).unwrap();
    lab.admin(&["policy", "set", all.to_str().unwrap()])
        .unwrap();
    wait_until(
        "peers back",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || Ok(!lab.peers("n1")?.is_empty()),
    )
    .unwrap();
    let routes_of_n2 = |lab: &Lab| -> Result<Vec<String>> {
        let s = lab.status("n1")?;
        Ok(s["Peer"]
            .as_object()
            .and_then(|m| m.values().find(|p| p["HostName"] == "n2"))
            .and_then(|p| p["PrimaryRoutes"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect())
    };
    assert!(routes_of_n2(&lab).unwrap().is_empty(), "not approved yet");
    lab.admin(&["nodes", "approve-routes", "2", "10.99.0.0/24"])
        .unwrap();
    wait_until(
        "n2's route in n1's map",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || Ok(routes_of_n2(&lab)? == vec!["10.99.0.0/24".to_owned()]),
    )
    .unwrap();
}

/// Older client code: tsnet of tailscale.com 1.90 (inside caddy) and 1.86 (a TCP forwarder)
/// join the same tailnet as tailscaled 1.96 and carry HTTP both ways.
#[test]
fn netns_realclients_older_tsnet_clients_join_and_carry_traffic() {
    let _serial = serial();
    let mut lab = Lab::new(false).unwrap();
    lab.start_with("n1", false, &["--socks5-server=127.0.0.1:1055"], &[])
        .unwrap();
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from n1\n").unwrap();
    let _http = lab
        .ns
        .spawn(
            "http.server",
            &[
                "python3",
                "-m",
                "http.server",
                "8000",
                "--bind",
                "127.0.0.1",
                "--directory",
                www.to_str().unwrap(),
            ],
        )
        .unwrap();
    // caddy: tsnet node "weft-web" answers on tailnet port 80; tsnet node "weft-probe" carries
    // a local proxy (127.0.0.1:18080) to n1's HTTP server over the tailnet.
    let caddyfile = lab.dir.join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tadmin off\n\tauto_https off\n\ttailscale {{\n\t\tcontrol_url http://127.0.0.1:8080\n\t\tauth_key {key}\n\t\tephemeral\n\t\tstate_dir {state}\n\t\tweft-web {{\n\t\t\thostname weft-web\n\t\t}}\n\t\tweft-probe {{\n\t\t\thostname weft-probe\n\t\t}}\n\t}}\n}}\n\n:80 {{\n\tbind tailscale/weft-web\n\trespond \"hello from weft-web\"\n}}\n\nhttp://127.0.0.1:18080 {{\n\tbind 127.0.0.1\n\treverse_proxy http://100.64.0.1:8000 {{\n\t\ttransport tailscale weft-probe\n\t}}\n}}\n",
            key = lab.key,
            state = lab.dir.join("caddy-ts").display(),
        ),
    )
    .unwrap();
    let caddy = lab.clients.join("caddy");
    let mut caddy_cmd = lab.ns.command(&[
        caddy.to_str().unwrap(),
        "run",
        "--config",
        caddyfile.to_str().unwrap(),
        "--adapter",
        "caddyfile",
    ]);
    caddy_cmd.env("HOME", lab.dir.join("caddy-home"));
    lab.nodes
        .push(ChildGuard::spawn("caddy", caddy_cmd).unwrap());
    let curl = |url: &str, socks: bool| -> Result<String> {
        let mut argv = vec!["curl", "-s", "--max-time", "4"];
        if socks {
            argv.extend(["--socks5-hostname", "127.0.0.1:1055"]);
        }
        argv.push(url);
        let out = lab.ns.exec_env(Duration::from_secs(10), &[], &argv)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // 1.90 → 1.96: caddy's probe node reaches n1.
    wait_until(
        "caddy (tsnet 1.90) reaches n1",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || Ok(curl("http://127.0.0.1:18080/", false)? == "hello from n1\n"),
    )
    .unwrap();
    // 1.96 → 1.90: n1 reaches caddy's web node by its tailnet address.
    let web_ip = |lab: &Lab| -> Result<String> {
        let s = lab.status("n1")?;
        Ok(s["Peer"]
            .as_object()
            .and_then(|m| m.values().find(|p| p["HostName"] == "weft-web"))
            .and_then(|p| p["TailscaleIPs"][0].as_str().map(str::to_owned))
            .unwrap_or_default())
    };
    let mut ip = String::new();
    wait_until(
        "weft-web in n1's map",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            ip = web_ip(&lab)?;
            Ok(!ip.is_empty())
        },
    )
    .unwrap();
    wait_until(
        "n1 reaches weft-web",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || Ok(curl(&format!("http://{ip}/"), true)? == "hello from weft-web"),
    )
    .unwrap();
    // 1.86 → 1.90: the forwarder finds weft-web by name among its peers.
    let fwd = lab.clients.join("ts-forwarder");
    let req = format!(
        "{{\"action\":\"start\",\"control_url\":\"http://127.0.0.1:8080\",\"auth_key\":\"{}\",\"hostname\":\"weft-fwd\",\"ephemeral\":true,\"remote_host\":\"weft-web\",\"remote_port\":80,\"local_port\":15080}}\n",
        lab.key
    );
    let req_file = lab.dir.join("fwd-request.json");
    std::fs::write(&req_file, req).unwrap();
    let mut fwd_cmd = lab.ns.command(&[
        "sh",
        "-c",
        &format!("exec {} < {}", fwd.display(), req_file.display()),
    ]);
    fwd_cmd.env("HOME", lab.dir.join("fwd-home"));
    lab.nodes
        .push(ChildGuard::spawn("ts-forwarder", fwd_cmd).unwrap());
    wait_until(
        "ts-forwarder (tsnet 1.86) reaches weft-web",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || Ok(curl("http://127.0.0.1:15080/", false)? == "hello from weft-web"),
    )
    .unwrap();
    let nodes = lab.admin(&["nodes", "list"]).unwrap();
    for name in ["n1", "weft-web", "weft-probe", "weft-fwd"] {
        assert!(nodes.contains(name), "{name} missing:\n{nodes}");
    }
}
