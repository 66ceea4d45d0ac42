//! The `tailscaled` row of `weft-perf relay`: two official clients in a tailnet run by
//! weft-coordd and the relay under test, forced onto the relay, iperf3 through the tailnet.
//! Split from `relay.rs`, whose module doc describes the rows; it shares that module's
//! context, relay start-up and counters.

use super::*;

pub(super) fn measure_tailscaled(
    ctx: &Ctx<'_>,
    d: &DerperBin,
    sample: &mut RelaySample,
) -> Result<()> {
    let net = crate::tailnet::Tailnet::build_with(ctx.weft, Some(&d.path), true)?;
    let relay_pid = net.derper_pid();
    let daemons = net.daemon_pids();
    let mut cpu = 0.0;
    let mut clients = 0.0;
    let mut window = 0.0;
    let mut total_bytes = 0u64;
    let relay_addr = format!("{}:3340", crate::tailnet::RELAY_IP);
    let m0 = scrape(&net.a, &relay_addr, true)?;
    let cm0 = client_metrics(&net);
    for reverse in [false, true] {
        ctx.check_stop()?;
        let mut server = net.b.spawn(
            "iperf3 server",
            &[
                "iperf3",
                "-s",
                "-1",
                "-B",
                &net.addr_b.to_string(),
                "-p",
                IPERF_PORT,
            ],
        )?;
        let filter = format!("sport = :{IPERF_PORT}");
        wait_until(
            "the iperf3 server",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || Ok(!net.b.run(&["ss", "-Hltn", &filter])?.trim().is_empty()),
        )?;
        let r0 = ticks(relay_pid)?;
        let c0: u64 = daemons.iter().map(|&p| ticks(p)).sum::<Result<u64>>()?;
        let t0 = now();
        let secs = ctx.duration.as_secs().to_string();
        let mut argv = vec![
            "iperf3",
            "-4",
            "-c",
            "",
            "-p",
            IPERF_PORT,
            "-t",
            &secs,
            "-J",
            "--connect-timeout",
            "5000",
        ];
        let addr = net.addr_b.to_string();
        if let Some(a) = argv.get_mut(3) {
            *a = &addr;
        }
        if reverse {
            argv.push("-R");
        }
        let out = net
            .a
            .exec_env(ctx.duration + Duration::from_secs(20), &[], &argv)?;
        let r1 = ticks(relay_pid)?;
        let c1: u64 = daemons.iter().map(|&p| ticks(p)).sum::<Result<u64>>()?;
        let el = t0.elapsed().as_secs_f64();
        let _ = server.wait_timeout(Duration::from_secs(5));
        let report = IperfReport::parse(&String::from_utf8_lossy(&out.stdout)).map_err(|e| {
            anyhow!(
                "iperf3: {e:#}; {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                net.logs(10)
            )
        })?;
        sample.directions_gbps.push(report.received_bps / 1e9);
        total_bytes += report.received_bytes;
        cpu += r1.saturating_sub(r0) as f64 / ctx.hz;
        clients += c1.saturating_sub(c0) as f64 / ctx.hz;
        window += el;
        sample.iperf.push(report);
    }
    let m1 = scrape(&net.a, &relay_addr, true)?;
    sample.counters = Some(counters(&m0, &m1));
    let cm1 = client_metrics(&net);
    for (k, v) in &cm1 {
        let d = v - cm0.get(k).copied().unwrap_or(0.0);
        if d != 0.0 {
            sample.client_metrics.insert(k.clone(), d);
        }
    }
    // The row's goodput: the mean of the two directions.
    let secs: f64 = sample.iperf.iter().map(|r| r.seconds).sum();
    sample.goodput_gbps = (secs > 0.0).then(|| total_bytes as f64 * 8.0 / secs / 1e9);
    sample.derper_cpu_s = Some(cpu);
    sample.window_s = Some(window);
    sample.clients_cpu_s = Some(clients);
    Ok(())
}

/// Both nodes' client metrics that mention DERP or sending, keyed `a:name` / `b:name`
/// (empty when the CLI fails: they explain, they are not the measurement).
fn client_metrics(net: &crate::tailnet::Tailnet) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for node in ["a", "b"] {
        let Ok(text) = net.tailscale(node, &["debug", "metrics"]) else {
            continue;
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if !(line.contains("derp") || line.contains("send")) {
                continue;
            }
            if let Some((k, v)) = line.rsplit_once(' ') {
                if let Ok(v) = v.trim().parse::<f64>() {
                    m.insert(format!("{node}:{}", k.trim()), v);
                }
            }
        }
    }
    m
}
