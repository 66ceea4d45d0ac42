#!/usr/bin/env bash
# Records a real handshake between wireguard-go and weft-wg, both directions, into
# dataplane/wg/tests/data/wireguard-go-handshake.txt (read by dataplane/wg/tests/wireguard_go.rs).
#
# Needs root (a network namespace and a TUN device), wireguard-go, wg, ping and python3. All
# traffic stays inside a private network namespace: wireguard-go listens on its loopback at
# 127.0.0.1:51820, and a python recorder plays "weft" at 127.0.0.1:51821, computing weft's
# messages with the deterministic helper `cargo run --example wg_go_handshake`.
#
# 1. wireguard-go -> weft: `ping` a tunnel address makes wireguard-go send an initiation; weft
#    (fixed seed, pinned clock) answers; wireguard-go must report a handshake (wg show
#    latest-handshakes) and sends the ping as transport data, recorded too.
# 2. weft -> wireguard-go: weft's initiation (fixed seed, pinned clock) is sent; wireguard-go's
#    response is recorded; weft's confirming keepalive is sent back, after which wireguard-go
#    must report a newer handshake.
#
# Usage: scripts/capture-wg-handshake.sh [output-file]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/dataplane/wg/tests/data/wireguard-go-handshake.txt}"
NS="wgrec$$"
IFACE="wgrec$$"
WORK="$(mktemp -d)"
GO_PID=""

cleanup() {
    set +e
    if [[ -n "$GO_PID" ]]; then
        kill "$GO_PID" 2>/dev/null
        wait "$GO_PID" 2>/dev/null
    fi
    ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -f "/var/run/wireguard/$IFACE.sock"
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in wireguard-go wg ip ping python3 cargo; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[[ $(id -u) -eq 0 ]] || { echo "run as root" >&2; exit 1; }

cargo build -q --manifest-path "$ROOT/Cargo.toml" -p weft-wg --example wg_go_handshake
HELPER="$ROOT/target/debug/examples/wg_go_handshake"

b64hex() { python3 -c 'import base64,sys; print(base64.b64decode(sys.argv[1]).hex())' "$1"; }

# wireguard-go's key is fresh; weft's key and seeds are fixed so the capture is easy to redo.
GO_PRIV_B64="$(wg genkey)"
GO_PUB_B64="$(printf '%s' "$GO_PRIV_B64" | wg pubkey)"
WEFT_PRIV_HEX="77656674207772697465732074686973206b657920666f722074657374732021"
WEFT_PRIV_B64="$(python3 -c 'import base64,sys; print(base64.b64encode(bytes.fromhex(sys.argv[1])).decode())' "$WEFT_PRIV_HEX")"
WEFT_PUB_B64="$(printf '%s' "$WEFT_PRIV_B64" | wg pubkey)"
RESPONDER_SEED="$(printf '%064x' 1)"
INITIATOR_SEED="$(printf '%064x' 2)"
UNIX_SECS="$(date +%s)"
printf '%s\n' "$GO_PRIV_B64" >"$WORK/go.key"

ip netns add "$NS"
ip -n "$NS" link set lo up
ip netns exec "$NS" wireguard-go -f "$IFACE" >"$WORK/wireguard-go.log" 2>&1 &
GO_PID=$!
for _ in $(seq 50); do
    [[ -S "/var/run/wireguard/$IFACE.sock" ]] && break
    sleep 0.1
done
ip netns exec "$NS" wg set "$IFACE" private-key "$WORK/go.key" listen-port 51820 \
    peer "$WEFT_PUB_B64" endpoint 127.0.0.1:51821 allowed-ips 10.99.0.2/32
ip -n "$NS" addr add 10.99.0.1/24 dev "$IFACE"
ip -n "$NS" link set "$IFACE" up

export HELPER IFACE WEFT_PRIV_HEX RESPONDER_SEED INITIATOR_SEED UNIX_SECS
export GO_PUB_HEX="$(b64hex "$GO_PUB_B64")" GO_PRIV_HEX="$(b64hex "$GO_PRIV_B64")"
export WEFT_PUB_HEX="$(b64hex "$WEFT_PUB_B64")"
ip netns exec "$NS" python3 - >"$WORK/capture.txt" <<'PY'
import os, socket, subprocess, sys, time

env = os.environ
GO = ("127.0.0.1", 51820)

def helper(cmd, seed, *msg):
    return bytes.fromhex(subprocess.check_output(
        [env["HELPER"], cmd, env["WEFT_PRIV_HEX"], env["GO_PUB_HEX"], seed, env["UNIX_SECS"], *msg],
        text=True).strip())

def latest_handshake():
    out = subprocess.check_output(["wg", "show", env["IFACE"], "latest-handshakes"], text=True)
    return int(out.split()[1])

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 51821))
sock.settimeout(10)

def recv(kind, size=None):
    deadline = time.time() + 10
    while time.time() < deadline:
        data, src = sock.recvfrom(2048)
        if data[0] == kind and (size is None or len(data) == size):
            return data
    sys.exit(f"no message of type {kind} from wireguard-go")

# 1. wireguard-go initiates; weft responds.
ping = subprocess.Popen(["ping", "-c", "4", "-i", "0.5", "-W", "1", "10.99.0.2"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
go_initiation = recv(1, 148)
weft_response = helper("respond", env["RESPONDER_SEED"], go_initiation.hex())
assert len(weft_response) == 92
sock.sendto(weft_response, GO)
go_transport = recv(4)  # the ping wireguard-go staged, on the new session
first_handshake = latest_handshake()
assert first_handshake > 0, "wireguard-go refused weft's response"
ping.wait()

# 2. weft initiates; wireguard-go responds; weft confirms.
time.sleep(1.1)  # so that wireguard-go's second handshake time is visibly newer
weft_initiation = helper("initiate", env["INITIATOR_SEED"])
assert len(weft_initiation) == 148
sock.sendto(weft_initiation, GO)
go_response = recv(2, 92)
weft_keepalive = helper("confirm", env["INITIATOR_SEED"], go_response.hex())
assert len(weft_keepalive) == 32
sock.sendto(weft_keepalive, GO)
time.sleep(0.5)
second_handshake = latest_handshake()
assert second_handshake > first_handshake, "wireguard-go did not take weft's confirmation"

for k, v in [
    ("go_initiation", go_initiation.hex()),
    ("weft_response", weft_response.hex()),
    ("go_transport", go_transport.hex()),
    ("go_accepted_weft_response_at", str(first_handshake)),
    ("weft_initiation", weft_initiation.hex()),
    ("go_response", go_response.hex()),
    ("weft_keepalive", weft_keepalive.hex()),
    ("go_accepted_weft_keepalive_at", str(second_handshake)),
]:
    print(f"{k} = {v}")
PY

VERSION="$(wireguard-go --version | head -n 1)"
PKG="$(dpkg-query -W -f '${Version}' wireguard-go 2>/dev/null || echo unknown)"
mkdir -p "$(dirname "$OUT")"
{
    echo "# A real handshake with wireguard-go, both directions; read by tests/wireguard_go.rs."
    echo "# Captured $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/capture-wg-handshake.sh with"
    echo "# $VERSION (Debian package wireguard-go $PKG), over loopback inside a network namespace."
    echo "# wireguard-go: private key go_private; its one peer is weft_public at 127.0.0.1:51821."
    echo "# weft: Device::new(seed, base, unix_secs), key weft_private, peer go_public at"
    echo "# 127.0.0.1:51820, every message made at \`base\` (tests/interop/mod.rs)."
    echo "# 1. \`ping 10.99.0.2\` made wireguard-go send go_initiation; weft (responder_seed) answered"
    echo "#    weft_response; wireguard-go then reported a handshake and sent the ping as go_transport."
    echo "# 2. weft (initiator_seed) sent weft_initiation; wireguard-go answered go_response; weft's"
    echo "#    confirming weft_keepalive made wireguard-go report a second handshake."
    echo "go_private = $GO_PRIV_HEX"
    echo "go_public = $GO_PUB_HEX"
    echo "weft_private = $WEFT_PRIV_HEX"
    echo "weft_public = $WEFT_PUB_HEX"
    echo "responder_seed = $RESPONDER_SEED"
    echo "initiator_seed = $INITIATOR_SEED"
    echo "unix_secs = $UNIX_SECS"
    cat "$WORK/capture.txt"
} >"$OUT"
echo "wrote $OUT"
