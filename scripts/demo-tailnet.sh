#!/usr/bin/env bash
# The tailnet, end to end on one machine: weft's coordination server (weft-coordd, state in
# SQLite) and DERP relay (weft-derper, TLS with its certificate pinned in the DERP map) on a
# "server" host, and two hosts running the official Tailscale client (tailscaled 1.96.4, TUN
# mode) that join with a pre-auth key, get addresses and MagicDNS names from weft, and reach
# each other with a plain kernel ping. Everything is removed afterwards — also on Ctrl-C or
# failure. Nothing leaves the namespaces: they are joined only to each other.
#
#   server (ns weftdemo-srv) 10.78.0.1      weft-coordd :8080, weft-derper :3340 (+STUN :3478)
#     bridge br0 ---- n1 (ns weftdemo-n1) 10.78.0.11   tailscaled, tailscale0
#                \--- n2 (ns weftdemo-n2) 10.78.0.12   tailscaled, tailscale0
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh >/dev/null
echo "== building weft-coordd and weft-derper"
cargo build -q -p weft-coordd -p weft-derper
BIN="$PWD/target/debug"
TS="$PWD/target/realclients/bin"
SRV=weftdemo-srv N1=weftdemo-n1 N2=weftdemo-n2
tmp=""
cleanup() {
  set +e
  for ns in $N1 $N2 $SRV; do ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null; done
  sleep 0.5
  for ns in $N1 $N2 $SRV; do
    ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del $ns 2>/dev/null
  done
  [ -n "$tmp" ] && rm -rf "$tmp"
  echo "== cleaned up (namespaces, interfaces, processes, state removed)"
}
trap cleanup EXIT INT TERM
cleanup >/dev/null 2>&1 || true
tmp=$(mktemp -d)

echo "== creating a server host and two client hosts on one bridge"
for ns in $SRV $N1 $N2; do ip netns add $ns; ip -n $ns link set lo up; done
ip -n $SRV link add br0 type bridge
ip -n $SRV addr add 10.78.0.1/24 dev br0
ip -n $SRV link set br0 up
i=11
for ns in $N1 $N2; do
  ip link add v$i netns $SRV type veth peer name eth0 netns $ns
  ip -n $SRV link set v$i master br0 up
  ip -n $ns addr add 10.78.0.$i/24 dev eth0
  ip -n $ns link set eth0 up
  ip -n $ns route add default via 10.78.0.1   # the client waits for a default route
  i=$((i + 1))
done

echo "== starting weft-derper and weft-coordd on the server host"
ip netns exec $SRV "$BIN/weft-derper" serve --listen 10.78.0.1:3340 --stun-listen 10.78.0.1:3478 \
  --state-dir "$tmp/derper" >"$tmp/derper.out" 2>"$tmp/derper.log" &
for _ in $(seq 1 50); do grep -q CertName "$tmp/derper.out" 2>/dev/null && break; sleep 0.2; done
PIN=$(sed -n 's/^CertName: //p' "$tmp/derper.out")
[ -n "$PIN" ] || { echo "weft-derper printed no certificate pin"; cat "$tmp/derper.log"; exit 1; }
ip netns exec $SRV "$BIN/weft-coordd" serve --state-dir "$tmp/coord" --listen 10.78.0.1:8080 \
  --derp https://10.78.0.1:3340 --derp-cert-pin "$PIN" 2>"$tmp/coordd.log" &
for _ in $(seq 1 50); do [ -S "$tmp/coord/admin.sock" ] && break; sleep 0.1; done
CD() { "$BIN/weft-coordd" --state-dir "$tmp/coord" "$@"; }
CD users create alice >/dev/null
KEY=$(CD keys create --user alice --reusable --expiration 1h)
echo "   user alice, pre-auth key ${KEY:0:23}… (shown once; only its hash is stored)"

i=1
for ns in $N1 $N2; do
  echo "== host n$i: tailscaled (official client, TUN) logs in to weft-coordd"
  mkdir -p "$tmp/n$i"
  ip netns exec $ns "$TS/tailscaled" --tun=tailscale0 --statedir="$tmp/n$i/state" \
    --socket="$tmp/n$i/ts.sock" --port=41641 --no-logs-no-support >"$tmp/n$i/log" 2>&1 &
  for _ in $(seq 1 50); do [ -S "$tmp/n$i/ts.sock" ] && break; sleep 0.1; done
  ip netns exec $ns "$TS/tailscale" --socket="$tmp/n$i/ts.sock" up --login-server=http://10.78.0.1:8080 \
    --auth-key="$KEY" --hostname="n$i" --accept-dns=false --netfilter-mode=off --timeout=40s
  i=$((i + 1))
done
ts1() { ip netns exec $N1 "$TS/tailscale" --socket="$tmp/n1/ts.sock" "$@"; }

echo "== the tailnet as weft-coordd sees it"
CD nodes list
echo "== n1's view (tailscale status)"
for _ in $(seq 1 40); do ts1 status | grep -q "n2 .*linux.*-" && ts1 status | grep -vq offline && break; sleep 0.25; done
ts1 status
echo "== kernel ping from n1 to n2 over the tailnet (WireGuard inside tailscaled)"
ip netns exec $N1 ping -c 3 -i 0.3 -W 2 100.64.0.2
echo "== tailscale ping n2 (path: DERP via weft-derper first, then direct)"
ts1 ping --c 5 n2 || true
echo "== deleting n2 with the admin CLI; n1's map loses it within moments"
CD nodes delete 2 >/dev/null
for _ in $(seq 1 50); do ts1 status | grep -q "100.64.0.2" || break; sleep 0.1; done
ts1 status
