#!/usr/bin/env bash
# Checks the dependency rules of docs/ARCHITECTURE.md with `cargo tree`, the way tailscale
# checks depaware.txt: a rule broken by a new dependency fails CI with the offending path.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0

# deps CRATE [DEPTH]: the normal (non-dev) dependencies of CRATE, one name per line.
deps() { cargo tree -q -p "$1" -e normal ${2:+--depth $2} --prefix none --format '{p}' | awk '{print $1}' | sort -u; }

forbid() { # forbid CRATE DEP... : CRATE must not depend on any DEP, even indirectly
  local crate=$1; shift
  local closure; closure=$(deps "$crate" "${DEPTH:-}")
  for dep in "$@"; do
    if grep -qx "$dep" <<<"$closure"; then
      echo "check-deps: $crate depends on $dep (forbidden)" >&2
      cargo tree -q -p "$crate" -e normal -i "$dep" >&2 || true
      fail=1
    fi
  done
}

# Rule 1: core crates depend on no runtime, no sockets, no platform crate.
# (libc arrives indirectly through ring/getrandom for randomness and CPU features; cores may
# not use it themselves.)
for core in weft-keys weft-packet weft-wg weft-handoff weft-filter weft-policy weft-derp weft-controlbase weft-tailcfg weft-tailnet weft-nat; do
  forbid "$core" tokio mio weft-sys weft-dataplane anyhow clap tracing-subscriber
  DEPTH=1 forbid "$core" libc socket2 nix
done
# Rule 2/3: the dataplane never depends on control/ crates.
for dp in weft-keys weft-packet weft-wg weft-handoff weft-filter weft-sys weft-dataplane; do
  forbid "$dp" weft-cli weft-testkit
done
# Rule 4: servers don't link client code.
forbid weft-derper weft-dataplane weft-sys weft-policy
# The DERP client shell is client code: no relay, no data plane (the relay links it for mesh).
forbid weft-derphttp weft-derper weft-dataplane weft-sys weft-policy
# The NAT shell is node-side: no relay, no coordination server, no data plane engine (yet);
# it uses weft-sys only to list interface addresses.
forbid weft-magicsock weft-derper weft-coordd weft-dataplane
forbid weft-coord weft-dataplane weft-sys weft-cli
# The control plane never links the data plane; the coordinator core never links a database.
forbid weft-coordd weft-dataplane weft-sys weft-cli
forbid weft-tailnet rusqlite hyper weft-coordstore
# (tokio arrives with the postgres client, confined to PgStore's own thread.)
forbid weft-coordstore hyper weft-coord weft-coordd
# weft-sys knows no protocol.
forbid weft-sys weft-wg weft-keys weft-packet weft-handoff
# Rule 5: anyhow, clap and tracing-subscriber only in binaries and the testkit.
for lib in weft-keys weft-packet weft-wg weft-handoff weft-filter weft-policy weft-derp weft-derphttp weft-controlbase weft-tailcfg weft-tailnet weft-coordstore weft-sys weft-dataplane weft-nat weft-magicsock; do
  forbid "$lib" anyhow clap tracing-subscriber
done

# Rule 6: ebpf/ depends on nothing above it (no dataplane/ or control/ crate); the shared
# layouts crate depends on nothing at all.
for e in weft-ebpf-common weft-ebpf; do
  forbid "$e" weft-keys weft-packet weft-wg weft-sys weft-dataplane weft-handoff weft-filter \
    weft-derp weft-policy weft-cli weft-testkit
done
if [ "$(deps weft-ebpf-common | grep -vcx weft-ebpf-common)" != 0 ]; then
  echo "check-deps: weft-ebpf-common must have no dependencies" >&2
  fail=1
fi

if [ "$fail" = 0 ]; then echo "check-deps: ok"; fi
exit "$fail"
