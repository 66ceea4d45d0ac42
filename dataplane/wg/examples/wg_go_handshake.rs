//! Capture helper for `scripts/capture-wg-handshake.sh`: prints, as hex, the messages a fixed
//! weft device exchanges with wireguard-go. Deterministic: the same arguments always print the
//! same bytes, which is what lets `tests/wireguard_go.rs` replay the capture.
//!
//! ```text
//! wg_go_handshake initiate <weft_priv> <go_pub> <seed> <unix_secs>            -> initiation
//! wg_go_handshake confirm  <weft_priv> <go_pub> <seed> <unix_secs> <response> -> keepalive
//! wg_go_handshake respond  <weft_priv> <go_pub> <seed> <unix_secs> <initiation> -> response
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/interop/mod.rs"]
mod interop;

#[allow(clippy::disallowed_methods)] // A shell: the base instant is arbitrary, only offsets matter.
fn base() -> std::time::Instant {
    std::time::Instant::now()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, private, go_pub, seed, unix, rest @ ..] = args.as_slice() else {
        eprintln!("usage: wg_go_handshake initiate|confirm|respond <weft_priv> <go_pub> <seed> <unix_secs> [message]");
        std::process::exit(2);
    };
    let base = base();
    let (mut dev, id) = interop::device(
        interop::hex32(private),
        interop::hex32(go_pub),
        interop::hex32(seed),
        unix.parse().expect("unix seconds"),
        base,
    );
    let msg = || hex::decode(rest.first().expect("message argument").trim()).unwrap();
    let out = match cmd.as_str() {
        "initiate" => interop::initiation(&mut dev, id, base),
        "confirm" => {
            interop::initiation(&mut dev, id, base);
            let mut out = interop::answer(&mut dev, base, &msg());
            assert_eq!(dev.stats().rx_responses, 1, "response refused");
            out.remove(0)
        }
        "respond" => {
            let mut out = interop::answer(&mut dev, base, &msg());
            assert_eq!(dev.stats().rx_initiations, 1, "initiation refused");
            out.remove(0)
        }
        other => panic!("unknown command {other}"),
    };
    println!("{}", hex::encode(out));
}
