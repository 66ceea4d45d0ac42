#!/usr/bin/env bash
# Where does the time go? A weft↔weft pair in two network namespaces (release build), one
# iperf3 TCP stream A→B for DURATION seconds, and a system-wide sampling profile (perf's
# cpu-clock software event, which works in this VM where hardware counters do not) over the
# middle of the transfer. Prints the CPU split by command, by command+object, and the hottest
# symbols of the two weft daemons and of the kernel; leaves perf.data in $OUT.
#
#   sudo scripts/profile.sh [DURATION=12] [OUT=/tmp/weft-profile]
#   WEFT_FLAGS="--no-gro" sudo -E scripts/profile.sh    # profile a fallback path
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-12}
OUT=${2:-/tmp/weft-profile}
mkdir -p "$OUT"
cargo build -q --release -p weft-cli
BIN="$PWD/target/release/weft"

NA=weftprof-a NB=weftprof-b
tmp=$(mktemp -d)
cleanup() {
  set +e
  for ns in $NA $NB; do ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null; done
  sleep 0.3
  ip netns del $NA 2>/dev/null; ip netns del $NB 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
cleanup
tmp=$(mktemp -d)

ip netns add $NA; ip netns add $NB
ip link add va netns $NA type veth peer name vb netns $NB
ip -n $NA addr add 192.168.78.1/24 dev va; ip -n $NB addr add 192.168.78.2/24 dev vb
for ns in $NA $NB; do ip -n $ns link set lo up; done
ip -n $NA link set va up; ip -n $NB link set vb up
umask 077
wg genkey > "$tmp/a.key"; wg genkey > "$tmp/b.key"
PA=$(wg pubkey < "$tmp/a.key"); PB=$(wg pubkey < "$tmp/b.key")
# shellcheck disable=SC2086
ip netns exec $NA "$BIN" wg ${WEFT_FLAGS:-} weftPA
# shellcheck disable=SC2086
ip netns exec $NB "$BIN" wg ${WEFT_FLAGS:-} weftPB
ip netns exec $NA wg set weftPA private-key "$tmp/a.key" listen-port 51820 \
  peer "$PB" allowed-ips 10.78.0.2/32 endpoint 192.168.78.2:51820
ip netns exec $NB wg set weftPB private-key "$tmp/b.key" listen-port 51820 \
  peer "$PA" allowed-ips 10.78.0.1/32 endpoint 192.168.78.1:51820
ip -n $NA addr add 10.78.0.1/24 dev weftPA; ip -n $NA link set weftPA up
ip -n $NB addr add 10.78.0.2/24 dev weftPB; ip -n $NB link set weftPB up
ip netns exec $NA ping -c 2 -i 0.3 -W 2 10.78.0.2 >/dev/null

ip netns exec $NB iperf3 -s -1 -D
sleep 0.5
ip netns exec $NA timeout $((DURATION + 20)) iperf3 -c 10.78.0.2 -t "$DURATION" -f m >"$OUT/iperf.txt" &
IPERF=$!
sleep 2
perf record -q -a -g -F 1999 -e cpu-clock -o "$OUT/perf.data" -- sleep $((DURATION - 4)) 2>/dev/null
wait $IPERF || true
grep -E "sender|receiver" "$OUT/iperf.txt"

report() { perf report -i "$OUT/perf.data" --stdio --no-children "$@" 2>/dev/null | grep -v '^#' | grep -v '^$'; }
echo "== CPU by command (100% = both cores for the whole window)"
report --sort comm -g none | head -12
echo "== CPU by command and object"
report --sort comm,dso -g none | head -20
echo "== hottest symbols in the weft daemons (user and kernel)"
report --comm weft --sort sym -g none | head -40
echo "== hottest symbols overall"
report --sort sym -g none | head -40
