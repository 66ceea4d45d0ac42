//! `weft-natlab`: the NAT traversal demo. Builds two hosts behind nftables NATs with a
//! `weft-derper` relay and STUN servers (`weft_testkit::NatLab`), runs a `weft-natpeer` on each,
//! and prints how the pair found its path; everything is removed afterwards. Root only.
//!
//! ```text
//! weft-natlab [--nat easy,easy] [--nat hard,hard] [--block-udp] [--two-regions] [--secs 6]
//! ```
//! Each `--nat A,B` is one run (`easy`, `hard`, or `hard:LO-HI` for a small port range); an
//! easy/hard or small-range hard/hard pair also runs the birthday probe. `--two-regions` homes
//! the second node on the lab's second relay (not meshed with the first): relayed packets
//! then go through the peer's home region.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use weft_natpeer::lab::{describe, run_pair_homed};
use weft_testkit::{NatKind, NatLab, NAT_PUBLIC};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "NAT traversal demo: two weft nodes behind nftables NATs"
)]
struct Args {
    /// NAT pair per run, e.g. `easy,easy`, `easy,hard`, `hard,hard`, `hard:40000-40063,hard:40000-40063`.
    #[arg(long = "nat", default_values_t = ["easy,easy".to_owned(), "easy,hard".to_owned(), "hard,hard".to_owned()])]
    nats: Vec<String>,
    /// Also run one pair with all UDP blocked at both NATs.
    #[arg(long)]
    block_udp: bool,
    /// Home the two nodes on different relays (regions 900 and 901, not meshed).
    #[arg(long)]
    two_regions: bool,
    /// Seconds per run.
    #[arg(long, default_value_t = 6)]
    secs: u64,
}

fn kind(s: &str) -> Result<NatKind> {
    match s {
        "easy" => Ok(NatKind::Easy),
        "hard" => Ok(NatKind::Hard),
        other => {
            let range = other
                .strip_prefix("hard:")
                .context("NAT kinds: easy, hard, hard:LO-HI")?;
            let (lo, hi) = range.split_once('-').context("hard:LO-HI")?;
            Ok(NatKind::HardRange(lo.parse()?, hi.parse()?))
        }
    }
}

fn label(k: NatKind) -> String {
    match k {
        NatKind::Easy => "easy".into(),
        NatKind::Hard => "hard".into(),
        NatKind::HardRange(lo, hi) => format!("hard({lo}-{hi})"),
    }
}

/// The birthday plans a pair of NAT kinds calls for (what a node agent would pick from the
/// peers' NAT types).
fn plans(kinds: [NatKind; 2]) -> [Option<String>; 2] {
    match kinds {
        [NatKind::Easy, NatKind::Hard] => [
            Some(format!("spray:{}:1024-65535:1024", NAT_PUBLIC[1])),
            Some(format!("fanout:{}:41641:256", NAT_PUBLIC[0])),
        ],
        [NatKind::Hard, NatKind::Easy] => [
            Some(format!("fanout:{}:41641:256", NAT_PUBLIC[1])),
            Some(format!("spray:{}:1024-65535:1024", NAT_PUBLIC[0])),
        ],
        [NatKind::HardRange(lo, hi), NatKind::HardRange(..)] => [
            Some(format!("sweep:{}:{lo}-{hi}:2", NAT_PUBLIC[1])),
            Some(format!("sweep:{}:{lo}-{hi}:2", NAT_PUBLIC[0])),
        ],
        _ => [None, None],
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let me = std::env::current_exe().context("own path")?;
    let dir = me.parent().map(PathBuf::from).context("own directory")?;
    let natpeer = dir.join("weft-natpeer");
    let derper = dir.join("weft-derper");
    for b in [&natpeer, &derper] {
        if !b.exists() {
            bail!(
                "{} not built (cargo build -p weft-natpeer -p weft-derper)",
                b.display()
            );
        }
    }
    let mut runs: Vec<([NatKind; 2], bool)> = Vec::new();
    for n in &args.nats {
        let (a, b) = n.split_once(',').context("--nat A,B")?;
        runs.push(([kind(a)?, kind(b)?], false));
    }
    if args.block_udp {
        runs.push(([NatKind::Easy, NatKind::Easy], true));
    }
    for (kinds, block) in runs {
        let name = format!(
            "{}/{}{}",
            label(kinds[0]),
            label(kinds[1]),
            if block { ", UDP blocked" } else { "" }
        );
        println!("== {name}: building the lab (two NATs, relay + STUN in the internet namespace)");
        let lab = NatLab::new(&derper, kinds, block)?;
        let birthday = plans(kinds);
        if birthday[0].is_some() {
            println!("   birthday probe: {:?} / {:?}", birthday[0], birthday[1]);
        }
        let homes = if args.two_regions { [0, 1] } else { [0, 0] };
        let out = run_pair_homed(&lab, &natpeer, args.secs, birthday, homes)?;
        for line in describe(&name, &out) {
            println!("   {line}");
        }
        if std::env::var_os("WEFT_NATLAB_TRACE").is_some() {
            for (i, lines) in out.iter().enumerate() {
                for l in lines.iter().filter(|l| l["event"] == "trace") {
                    println!("   node{i} {l}");
                }
            }
        }
    }
    println!("== done; namespaces removed");
    Ok(())
}
