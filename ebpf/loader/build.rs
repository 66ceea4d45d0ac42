//! Builds the eBPF programs in `ebpf/progs` with clang (`-O2 -g -target bpf`) into OUT_DIR,
//! where `src/lib.rs` embeds them, and checks that `weft_maps.h` and `weft-ebpf-common` agree
//! on every shared constant.
//!
//! A missing clang or missing libbpf/kernel headers stop the build with the Debian packages to
//! install, instead of a compiler error about a missing header.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

const PROGRAMS: &[&str] = &["acl_tc", "acl_xdp"];
const PACKAGES: &str = "clang llvm libbpf-dev linux-libc-dev";

fn fail(msg: &str) -> ! {
    eprintln!("error: weft-ebpf build: {msg}");
    println!("cargo:warning=weft-ebpf build: {msg}");
    exit(1);
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let progs = manifest.join("../progs");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    println!("cargo:rerun-if-env-changed=WEFT_CLANG");
    println!(
        "cargo:rerun-if-changed={}",
        progs.join("weft_maps.h").display()
    );
    for p in PROGRAMS {
        println!(
            "cargo:rerun-if-changed={}",
            progs.join(format!("{p}.c")).display()
        );
    }

    check_defines(&progs.join("weft_maps.h"));

    let clang = env::var("WEFT_CLANG").unwrap_or_else(|_| "clang".to_owned());
    match Command::new(&clang).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => fail(&format!(
            "`{clang}` not found or not working; install the Debian packages `{PACKAGES}` \
             (scripts/setup.sh does), or point WEFT_CLANG at a clang that targets bpf"
        )),
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail(&format!(
            "/usr/include/bpf/bpf_helpers.h missing; install the Debian packages `{PACKAGES}`"
        ));
    }
    let multiarch = multiarch();
    if !Path::new(&format!("/usr/include/{multiarch}/asm/types.h")).exists()
        && !Path::new("/usr/include/asm/types.h").exists()
    {
        fail(&format!(
            "asm/types.h missing (looked in /usr/include/{multiarch}); install `linux-libc-dev`"
        ));
    }

    for p in PROGRAMS {
        let src = progs.join(format!("{p}.c"));
        let obj = out.join(format!("{p}.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-I")
            .arg(&progs)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => fail(&format!("clang failed on {} ({s})", src.display())),
            Err(e) => fail(&format!("running clang: {e}")),
        }
    }
}

/// The Debian multiarch directory for the kernel's `asm/` headers.
fn multiarch() -> String {
    for cc in ["gcc", "cc"] {
        if let Ok(o) = Command::new(cc).arg("-print-multiarch").output() {
            let s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if o.status.success() && !s.is_empty() {
                return s;
            }
        }
    }
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu".to_owned(),
        _ => "x86_64-linux-gnu".to_owned(),
    }
}

/// Every constant `weft-ebpf-common` mirrors must be `#define`d in the header with the same
/// value.
fn check_defines(header: &Path) {
    let text = std::fs::read_to_string(header)
        .unwrap_or_else(|e| fail(&format!("reading {}: {e}", header.display())));
    let mut wrong = Vec::new();
    for (name, want) in weft_ebpf_common::C_DEFINES {
        let found = text.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some("#define") && it.next() == Some(name))
                .then(|| it.next().map(parse_value))
                .flatten()
        });
        match found {
            Some(Some(v)) if v == *want => {}
            Some(Some(v)) => wrong.push(format!("{name}: header {v}, weft-ebpf-common {want}")),
            _ => wrong.push(format!("{name}: not a plain number in the header")),
        }
    }
    // Derived defines (WEFT_SLOT_WORDS is `(WEFT_SLOTS / 64)`) are checked through the base.
    wrong.retain(|w| !w.starts_with("WEFT_SLOT_WORDS:"));
    if !wrong.is_empty() {
        fail(&format!(
            "weft_maps.h and weft-ebpf-common disagree:\n  {}",
            wrong.join("\n  ")
        ));
    }
}

fn parse_value(s: &str) -> Option<u64> {
    s.parse().ok()
}
