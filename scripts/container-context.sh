#!/usr/bin/env bash
# Lays out target/container/ for `docker build --build-arg BINARY=prebuilt`: the static
# binary, the CA certificates, and the empty valves and data directories.
#
#   scripts/container-context.sh target/x86_64-unknown-linux-gnu/release/sluice
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:?usage: scripts/container-context.sh PATH-TO-STATIC-SLUICE}
# A dynamic executable names its loader (PT_INTERP); a static one has none.
if readelf -l "$binary" | grep -q 'program interpreter'; then
  echo "container-context: $binary is dynamically linked; build it with scripts/build-release.sh" >&2
  exit 1
fi
certs=/etc/ssl/certs/ca-certificates.crt
[ -f "$certs" ] || { echo "container-context: no $certs (apt install ca-certificates)" >&2; exit 1; }
out=target/container
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/app/data" "$out/app/valves"
cp "$binary" "$out/usr/local/bin/sluice"
cp "$certs" "$out/etc/ssl/certs/"
echo "$out"
