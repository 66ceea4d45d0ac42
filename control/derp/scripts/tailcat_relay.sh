#!/usr/bin/env bash
# Official Tailscale client code relaying through weft's DERP core: two `tailcat` peers
# (tailscale.com derphttp + magicsock, no control server) with a DERP map pointing at the
# plain_derper example, forced onto DERP (TS_DEBUG_ALWAYS_USE_DERP=1) over plain HTTP
# (TS_DEBUG_USE_DERP_HTTP=1). Checks a disco ping and a 4 MB transfer (SHA-256 compared).
#
# Usage (root; builds the example, installs the clients, runs everything in sandbox.sh):
#   control/derp/scripts/tailcat_relay.sh
# Exits 0 when both checks pass. Logs stay in $WORK.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
RC=${REALCLIENTS:-$ROOT/../shared/realclients}
WORK=${WORK:-/tmp/weft-tailcat-relay}

if [ "${WEFT_IN_SANDBOX:-}" != 1 ]; then
  (cd "$ROOT" && cargo build -q -p weft-derp --example plain_derper)
  bash "$RC/install.sh" "$WORK/clients" >/dev/null
  export WEFT_IN_SANDBOX=1 WORK ROOT RC
  exec "$RC/sandbox.sh" "$0"
fi

TC=$WORK/clients/bin/tailcat
rm -rf "$WORK/run"; mkdir -p "$WORK/run/tc1" "$WORK/run/tc2" "$WORK/run/tc3"
cd "$WORK/run"
"$ROOT/target/debug/examples/plain_derper" 127.0.0.1:3340 2>derper.log &
(cd "$RC" && exec python3 -m http.server -b 127.0.0.1 8081 >/dev/null 2>&1) &
sleep 1
export TS_DEBUG_USE_DERP_HTTP=1 TS_DEBUG_ALWAYS_USE_DERP=1
MAP=http://127.0.0.1:8081/derpmap.example.json

addr_of() { # wait for tailcat's {"listenAddr":...} line in $1
  for _ in $(seq 1 60); do grep -q listenAddr "$1" 2>/dev/null && break; sleep 0.5; done
  python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["listenAddr"])' "$1"
}

# 1. Disco ping through the relay.
HOME=$PWD/tc1 timeout 60 "$TC" serve --derpmap-url $MAP --key new --json 80 >tc1.out 2>tc1.err &
A=$(addr_of tc1.out)
HOME=$PWD/tc2 timeout 40 "$TC" ping --derpmap-url $MAP "$A" >ping.out 2>ping.err
grep -q 'via DERP' ping.out || { echo "FAIL: ping"; cat ping.out ping.err; exit 1; }
echo "ping: $(tail -1 ping.out)"

# 2. A 4 MB stream through the relay, compared end to end.
head -c 4000000 /dev/urandom >payload.bin
HOME=$PWD/tc3 timeout 90 "$TC" --derpmap-url $MAP --key new --json >tc3.out 2>tc3.err &
B=$(addr_of tc3.out)
HOME=$PWD/tc2 timeout 60 "$TC" --derpmap-url $MAP "$B" <payload.bin >/dev/null 2>send.err
sleep 2
python3 - <<'PY'
import hashlib, sys
d = open("tc3.out", "rb").read()
body = d[d.index(b"\n") + 1:]
want = hashlib.sha256(open("payload.bin", "rb").read()).hexdigest()
got = hashlib.sha256(body).hexdigest()
print(f"stream: {len(body)} bytes received, sha256 {'matches' if got == want else 'DIFFERS'}")
sys.exit(0 if got == want else 1)
PY
tail -1 derper.log
