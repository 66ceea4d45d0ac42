#!/usr/bin/env bash
# Official Tailscale client code relaying through weft-derper: two `tailcat` peers
# (tailscale.com derphttp + magicsock, no control server) with a DERP map pointing at the
# weft-derper binary, forced onto DERP (TS_DEBUG_ALWAYS_USE_DERP=1). Checks a disco ping and a
# 4 MB transfer (SHA-256 compared).
#
# The by-hand variant: CI runs control/derper/tests/tailcat.rs instead (tailcat peers behind
# hard and easy nftables NATs in weft_testkit::NatLab, no TS_DEBUG_* knob, relayed or direct
# as the NATs allow). This script stays for plain HTTP (MODE=plain) and for poking at the
# clients by hand on loopback.
#
# MODE=tls (default): HTTPS with the relay's self-signed certificate pinned in the DERP map
#   (CertName "sha256-raw:<hex>" as printed by weft-derper) and STUN on 3478 — no debug knob
#   for the transport.
# MODE=plain: --plain-http, clients with TS_DEBUG_USE_DERP_HTTP=1.
#
# Usage (root; builds the binary, installs the clients, runs everything in sandbox.sh):
#   [MODE=plain] control/derp/scripts/tailcat_relay.sh
# Exits 0 when both checks pass. Logs stay in $WORK.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
RC=${REALCLIENTS:-$ROOT/../shared/realclients}
WORK=${WORK:-/tmp/weft-tailcat-relay}
MODE=${MODE:-tls}

if [ "${WEFT_IN_SANDBOX:-}" != 1 ]; then
  (cd "$ROOT" && cargo build -q -p weft-derper)
  bash "$RC/install.sh" "$WORK/clients" >/dev/null
  export WEFT_IN_SANDBOX=1 WORK ROOT RC MODE
  exec "$RC/sandbox.sh" "$0"
fi

TC=$WORK/clients/bin/tailcat
rm -rf "$WORK/run"; mkdir -p "$WORK/run/tc1" "$WORK/run/tc2" "$WORK/run/tc3" "$WORK/run/www"
cd "$WORK/run"
if [ "$MODE" = plain ]; then
  "$ROOT/target/debug/weft-derper" serve --listen 127.0.0.1:3340 --stun-listen 127.0.0.1:3478 \
    --state-dir "$PWD/state" --plain-http >derper.out 2>derper.log &
  export TS_DEBUG_USE_DERP_HTTP=1
  CERT=''
else
  "$ROOT/target/debug/weft-derper" serve --listen 127.0.0.1:3340 --stun-listen 127.0.0.1:3478 \
    --state-dir "$PWD/state" >derper.out 2>derper.log &
  for _ in $(seq 1 50); do grep -q CertName derper.out 2>/dev/null && break; sleep 0.2; done
  CERT=$(sed -n 's/^CertName: //p' derper.out)
  [ -n "$CERT" ] || { echo "FAIL: no certificate pin printed"; cat derper.log; exit 1; }
  echo "pin: $CERT"
fi
DERPER=$!
python3 - "$CERT" >www/derpmap.json <<'PY'
import json, sys
node = {"Name": "900a", "RegionID": 900, "HostName": "127.0.0.1", "IPv4": "127.0.0.1",
        "IPv6": "none", "DERPPort": 3340, "STUNPort": 3478}
if sys.argv[1]:
    node["CertName"] = sys.argv[1]
print(json.dumps({"Regions": {"900": {"RegionID": 900, "RegionCode": "weft",
                                      "RegionName": "weft test DERP", "Nodes": [node]}}}))
PY
(cd www && exec python3 -m http.server -b 127.0.0.1 8081 >/dev/null 2>&1) &
sleep 1
export TS_DEBUG_ALWAYS_USE_DERP=1
MAP=http://127.0.0.1:8081/derpmap.json

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
curl -s http://127.0.0.1:3340/metrics 2>/dev/null | grep -E '^derp_(packets_(received|sent)|accepts)_total|^derper_stun_answered' \
  || python3 - <<'PY'
import ssl, urllib.request
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for l in urllib.request.urlopen("https://127.0.0.1:3340/metrics", context=ctx).read().decode().splitlines():
    if l.startswith(("derp_accepts_total", "derp_packets_received_total", "derp_packets_sent_total", "derper_stun_answered_total")):
        print(l)
PY
kill -TERM $DERPER; wait $DERPER || true
tail -2 derper.log
