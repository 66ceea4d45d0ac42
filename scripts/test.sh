#!/usr/bin/env bash
# The test suite: unit, property, corpus-replay and network-namespace interop tests.
# Needs root (namespaces, TUN) and the tools scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
mountpoint -q /sys/fs/bpf 2>/dev/null || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo nextest run --workspace --profile ci "$@"
