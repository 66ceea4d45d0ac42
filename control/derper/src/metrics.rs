//! `/metrics` in the Prometheus text format, from the core's `ServerStats` and the shell's
//! counters. Names follow upstream derper's `derp_*` variables where one exists, so dashboards
//! built for it read ours; drops carry upstream's `reason` and `kind` labels.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use weft_derp::server::{DropReason, ServerStats};

use crate::relay::ShellCounters;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Renders every counter.
pub fn render(s: &ServerStats, shell: &ShellCounters) -> String {
    let mut o = String::with_capacity(4096);
    let gauges: [(&str, &str, u64); 4] = [
        (
            "derp_current_connections",
            "Connections open now.",
            s.current_clients,
        ),
        (
            "derp_current_home_connections",
            "Connections whose client calls this relay home.",
            s.current_home_clients,
        ),
        (
            "derp_current_duplicate_client_keys",
            "Keys with more than one connection.",
            s.duplicate_client_keys,
        ),
        (
            "derp_current_duplicate_client_conns",
            "Connections sharing a key.",
            s.duplicate_client_conns,
        ),
    ];
    for (name, help, v) in gauges {
        metric(&mut o, name, "gauge", help, v);
    }
    let counters: [(&str, &str, u64); 14] = [
        ("derp_accepts_total", "Connections accepted.", s.accepts),
        (
            "derp_packets_received_total",
            "SendPacket frames received.",
            s.packets_received,
        ),
        (
            "derp_bytes_received_total",
            "Packet bytes received.",
            s.bytes_received,
        ),
        (
            "derp_packets_sent_total",
            "Packets written to clients.",
            s.packets_sent,
        ),
        (
            "derp_bytes_sent_total",
            "Packet bytes written to clients.",
            s.bytes_sent,
        ),
        (
            "derp_packets_forwarded_out_total",
            "Packets handed to mesh peers.",
            s.packets_forwarded_out,
        ),
        (
            "derp_packets_forwarded_in_total",
            "Packets forwarded by mesh peers.",
            s.packets_forwarded_in,
        ),
        (
            "derp_peer_gone_disconnected_frames_total",
            "PeerGone(Disconnected) frames written.",
            s.peer_gone_disconnected_frames,
        ),
        (
            "derp_peer_gone_not_here_frames_total",
            "PeerGone(NotHere) frames written.",
            s.peer_gone_not_here_frames,
        ),
        (
            "derp_got_ping_total",
            "Ping frames received.",
            s.pings_received,
        ),
        ("derp_sent_pong_total", "Pong frames written.", s.pongs_sent),
        (
            "derp_keep_alives_sent_total",
            "KeepAlive frames written.",
            s.keep_alives_sent,
        ),
        (
            "derp_unknown_frames_total",
            "Frames of unhandled types skipped.",
            s.unknown_frames,
        ),
        (
            "derp_rate_limit_pauses_total",
            "Times reading paused on a client's receive limit.",
            s.rate_limit_pauses,
        ),
    ];
    for (name, help, v) in counters {
        metric(&mut o, name, "counter", help, v);
    }

    let _ = writeln!(
        o,
        "# HELP derp_packets_dropped_total Packets dropped, by reason and kind."
    );
    let _ = writeln!(o, "# TYPE derp_packets_dropped_total counter");
    let _ = writeln!(
        o,
        "# HELP derp_bytes_dropped_total Packet bytes dropped, by reason and kind."
    );
    let _ = writeln!(o, "# TYPE derp_bytes_dropped_total counter");
    for reason in DropReason::ALL {
        for (disco, kind) in [(true, "disco"), (false, "other")] {
            let c = s.drops.get(reason, disco);
            let labels = format!("reason=\"{}\",kind=\"{kind}\"", reason.label());
            let _ = writeln!(o, "derp_packets_dropped_total{{{labels}}} {}", c.packets);
            let _ = writeln!(o, "derp_bytes_dropped_total{{{labels}}} {}", c.bytes);
        }
    }

    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    metric(
        &mut o,
        "derper_mesh_links_up",
        "gauge",
        "Mesh links to other servers of the region up now.",
        load(&shell.mesh_links_up),
    );
    let shell_counters: [(&str, &str, u64); 14] = [
        (
            "derper_verify_allowed_total",
            "Clients admitted by the verify URL.",
            load(&shell.verify_allowed),
        ),
        (
            "derper_verify_denied_total",
            "Clients refused by the verify URL.",
            load(&shell.verify_denied),
        ),
        (
            "derper_verify_errors_total",
            "Clients refused because the verify URL failed.",
            load(&shell.verify_errors),
        ),
        (
            "derper_handshake_failures_total",
            "Connections that failed the DERP handshake.",
            load(&shell.handshake_failures),
        ),
        (
            "derper_tls_failures_total",
            "Failed TLS handshakes.",
            load(&shell.tls_failures),
        ),
        (
            "derper_tls_probes_dropped_total",
            "TLS ClientHellos dropped on a plain-HTTP port.",
            load(&shell.tls_probes_dropped),
        ),
        (
            "derper_write_failures_total",
            "Connections closed on a write timeout or error.",
            load(&shell.write_failures),
        ),
        (
            "derper_input_errors_total",
            "Connections closed for bad input.",
            load(&shell.input_errors),
        ),
        (
            "derper_http_requests_total",
            "HTTP requests served.",
            load(&shell.http_requests),
        ),
        (
            "derper_stun_answered_total",
            "STUN binding requests answered.",
            load(&shell.stun_answered),
        ),
        (
            "derper_stun_ignored_total",
            "Datagrams on the STUN port that were ignored.",
            load(&shell.stun_ignored),
        ),
        (
            "derper_mesh_connects_total",
            "Mesh links established (reconnects included).",
            load(&shell.mesh_connects),
        ),
        (
            "derper_mesh_failures_total",
            "Mesh dials that failed and mesh links that broke.",
            load(&shell.mesh_failures),
        ),
        (
            "derper_mesh_forward_dropped_total",
            "Packets for a mesh peer's client dropped: link full or down.",
            load(&shell.mesh_forward_dropped),
        ),
    ];
    for (name, help, v) in shell_counters {
        metric(&mut o, name, "counter", help, v);
    }
    o
}
