//! Declares the `loom` cfg (set by scripts/loom.sh through RUSTFLAGS) so that
//! `unexpected_cfgs` accepts it; the workspace lint table cannot be extended per crate.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
    println!("cargo::rerun-if-changed=build.rs");
}
