#!/usr/bin/env bash
# The main job, end to end. Part 1, the data plane: two hosts (network namespaces joined by a veth "wire"), a weft
# WireGuard tunnel between them configured with the standard `wg` tool, traffic shown flowing
# (ping, then a 5-second iperf3 TCP run), the peers' view from `wg show`, and everything
# removed afterwards — also on Ctrl-C or failure. Part 2, the control plane:
# scripts/demo-tailnet.sh (weft-coordd + weft-derper, two official Tailscale clients). Part 3,
# NAT traversal: weft-natlab (two weft nodes behind easy/hard nftables NATs, relay first, then
# direct where the NATs allow it).
#
#   host A (ns weftdemo-a)                          host B (ns weftdemo-b)
#   weftA: 10.77.0.1/24  <==== WireGuard ====>      weftB: 10.77.0.2/24
#   veth va: 192.168.77.1/24 ---- wire ----  veth vb: 192.168.77.2/24
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
echo "== building weft (cargo build -p weft-cli)"
cargo build -q -p weft-cli
BIN="$PWD/target/debug/weft"

NA=weftdemo-a NB=weftdemo-b
cleanup() {
  set +e
  for ns in $NA $NB; do
    ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null
  done
  sleep 0.3
  ip netns del $NA 2>/dev/null; ip netns del $NB 2>/dev/null
  rm -f /var/run/wireguard/weftA.sock /var/run/wireguard/weftB.sock "$tmp"/*.key 2>/dev/null
  rmdir "$tmp" 2>/dev/null
  echo "== cleaned up (namespaces, interfaces, processes removed)"
}
tmp=$(mktemp -d)
trap cleanup EXIT INT TERM
cleanup >/dev/null 2>&1 || true
tmp=$(mktemp -d)

echo "== creating hosts $NA and $NB joined by a veth wire"
ip netns add $NA; ip netns add $NB
ip link add va netns $NA type veth peer name vb netns $NB
ip -n $NA addr add 192.168.77.1/24 dev va; ip -n $NB addr add 192.168.77.2/24 dev vb
for ns in $NA $NB; do ip -n $ns link set lo up; done
ip -n $NA link set va up; ip -n $NB link set vb up

umask 077
wg genkey > "$tmp/a.key"; wg genkey > "$tmp/b.key"
PA=$(wg pubkey < "$tmp/a.key"); PB=$(wg pubkey < "$tmp/b.key")

echo "== starting weft wg on both hosts (daemonizes like wireguard-go)"
ip netns exec $NA "$BIN" wg weftA
ip netns exec $NB "$BIN" wg weftB
ip netns exec $NA wg set weftA private-key "$tmp/a.key" listen-port 51820 \
  peer "$PB" allowed-ips 10.77.0.2/32 endpoint 192.168.77.2:51820
ip netns exec $NB wg set weftB private-key "$tmp/b.key" listen-port 51820 \
  peer "$PA" allowed-ips 10.77.0.1/32 endpoint 192.168.77.1:51820
ip -n $NA addr add 10.77.0.1/24 dev weftA; ip -n $NA link set weftA up
ip -n $NB addr add 10.77.0.2/24 dev weftB; ip -n $NB link set weftB up

echo "== ping through the tunnel"
ip netns exec $NA ping -c 3 -i 0.3 -W 2 10.77.0.2

echo "== iperf3: 5 s of TCP from A to B through the tunnel"
ip netns exec $NB iperf3 -s -1 -D
sleep 0.5
ip netns exec $NA timeout 30 iperf3 -c 10.77.0.2 -t 5 -f m | grep -E "sender|receiver"

echo "== wg show on host A"
ip netns exec $NA wg show weftA
echo "== wg show on host B"
ip netns exec $NB wg show weftB

echo
echo "== part 2: a tailnet run by weft (coordination server + DERP relay, official clients)"
./scripts/demo-tailnet.sh

echo
echo "== part 3: NAT traversal (two weft nodes behind nftables NATs, weft-derper relay + STUN)"
echo "== building weft-natpeer and weft-derper"
cargo build -q -p weft-natpeer -p weft-derper
# Relayed at once, then direct when the NATs allow it: easy/easy by disco, easy/hard by the
# birthday probe; hard/hard stays on the relay. weft-natlab removes its namespaces itself.
./target/debug/weft-natlab --nat easy,easy --nat easy,hard --nat hard,hard --secs 5
