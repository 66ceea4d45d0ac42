#!/usr/bin/env bash
# Official Tailscale clients (tailscaled 1.96.4) in a tailnet run by weft: weft-coordd for
# control, weft-derper (TLS, certificate pinned in the DERP map) for relay. Two nodes join
# with a pre-auth key, see each other in their netmaps, and `tailscale ping` each other;
# then one node is deleted with the admin CLI and must vanish from the other's map.
#
# Usage (root; builds the binaries, installs the clients from PyPI, seals everything in the
# real-client kit's sandbox.sh):   control/coordd/scripts/realclients_mesh.sh
# Exits 0 when every check passes; logs stay in $WORK.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
RC=${REALCLIENTS:-$ROOT/../shared/realclients}
WORK=${WORK:-/tmp/weft-realclients-mesh}
# MODE=direct (default): nodes may find the direct path. MODE=derp: clients never go direct
# (TS_DEBUG_ALWAYS_USE_DERP=1), so every packet is relayed by weft-derper, which admits only
# nodes weft-coordd's /verify accepts.
MODE=${MODE:-direct}

if [ "${WEFT_IN_SANDBOX:-}" != 1 ]; then
  [ -x "$RC/sandbox.sh" ] || { echo "real-client kit not found at $RC (set REALCLIENTS)" >&2; exit 2; }
  (cd "$ROOT" && cargo build -q -p weft-derper -p weft-coordd)
  bash "$RC/install.sh" "$WORK/clients" >/dev/null
  export WEFT_IN_SANDBOX=1 WORK ROOT RC MODE
  exec timeout 300 "$RC/sandbox.sh" "$0"
fi

BIN=$ROOT/target/debug
TS=$WORK/clients/bin
rm -rf "$WORK/run"; mkdir -p "$WORK/run"; cd "$WORK/run"
fail() { echo "FAIL: $*"; for f in *.log n*/tailscaled.log; do echo "== $f"; tail -n 30 "$f"; done; exit 1; }
step() { printf '%s %s\n' "$(date +%T)" "$*"; }

VERIFY=()
if [ "$MODE" = derp ]; then
  export TS_DEBUG_ALWAYS_USE_DERP=1
  VERIFY=(--verify-url http://127.0.0.1:8080/verify)
fi
"$BIN/weft-derper" serve --listen 127.0.0.1:3340 --stun-listen 127.0.0.1:3478 \
  --state-dir "$PWD/derper" "${VERIFY[@]}" >derper.out 2>derper.log &
for _ in $(seq 1 50); do grep -q CertName derper.out 2>/dev/null && break; sleep 0.2; done
PIN=$(sed -n 's/^CertName: //p' derper.out)
[ -n "$PIN" ] || fail "weft-derper printed no certificate pin"

"$BIN/weft-coordd" serve --state-dir "$PWD/coord" --listen 127.0.0.1:8080 \
  --derp https://127.0.0.1:3340 --derp-cert-pin "$PIN" --keepalive-secs 20 2>coordd.log &
CD() { "$BIN/weft-coordd" --state-dir "$PWD/coord" "$@"; }
for _ in $(seq 1 50); do [ -S coord/admin.sock ] && break; sleep 0.1; done
CD users create alice >/dev/null
KEY=$(CD keys create --user alice --reusable --expiration 10m)
step "coordd + derper up; key ${KEY%-*}-…"

start() {
  mkdir -p "$1"
  "$TS/tailscaled" --tun=userspace-networking --statedir="$PWD/$1/state" --socket="$PWD/$1/ts.sock" \
    --port=0 --no-logs-no-support >"$1/tailscaled.log" 2>&1 &
  for _ in $(seq 1 50); do [ -S "$1/ts.sock" ] && break; sleep 0.1; done
  "$TS/tailscale" --socket="$PWD/$1/ts.sock" up --login-server=http://127.0.0.1:8080 \
    --auth-key="$KEY" --hostname="$1" --accept-dns=false --timeout=40s || fail "tailscale up $1"
}
ts() { local n=$1; shift; "$TS/tailscale" --socket="$PWD/$n/ts.sock" "$@"; }
start n1; step "n1 up: $(ts n1 ip -4)"
start n2; step "n2 up: $(ts n2 ip -4)"

# Each sees the other, online.
for pair in "n1 n2" "n2 n1"; do
  set -- $pair
  ok=0
  for _ in $(seq 1 60); do
    if ts "$1" status --json | python3 -c "
import json,sys
s=json.load(sys.stdin)
ps=[p for p in (s.get('Peer') or {}).values() if p['HostName']=='$2']
sys.exit(0 if ps and ps[0].get('Online') else 1)"; then ok=1; break; fi
    sleep 0.5
  done
  [ $ok = 1 ] || fail "$1 does not see $2 online"
done
step "netmaps: each node sees the other online"
ts n1 status

N2=$(ts n2 ip -4)
ts n1 ping --c 10 --until-direct=false "$N2" >ping.out 2>&1 || { cat ping.out; fail "tailscale ping n1 -> n2"; }
step "ping: $(tail -n 1 ping.out)"
if [ "$MODE" = derp ]; then
  grep -q "via DERP(weft)" ping.out || { cat ping.out; fail "MODE=derp but the ping was not relayed"; }
fi
ts n1 ping --tsmp --c 3 "$N2" >tsmp.out 2>&1 || { cat tsmp.out; fail "TSMP ping (through WireGuard)"; }
step "tsmp: $(tail -n 1 tsmp.out)"
# MagicDNS name of the peer as the server named it.
ts n1 status --json | python3 -c "
import json,sys
s=json.load(sys.stdin)
names=[p['DNSName'] for p in s['Peer'].values()]
assert names==['n2.tail.weft.'], names
print('dns name:', names[0])"

CD nodes list
ID2=$(CD --json nodes list | python3 -c "import json,sys; print([n['id'] for n in json.load(sys.stdin) if n['name']=='n2'][0])")
CD nodes delete "$ID2" >/dev/null
t0=$(date +%s.%N)
gone=0
for _ in $(seq 1 100); do
  if ts n1 status --json | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if not (s.get('Peer') or {}) else 1)"; then gone=1; break; fi
  sleep 0.1
done
[ $gone = 1 ] || fail "deleted node still in n1's map after 10 s"
step "delete: n2 left n1's map after $(python3 -c "print(round($(date +%s.%N)-$t0,2))") s"
echo PASS
