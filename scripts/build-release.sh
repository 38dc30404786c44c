#!/usr/bin/env bash
# The release binary: statically linked (no shared library, no NSS module at run time: it runs
# in a `FROM scratch` image), and reproducible: the same commit built in another directory, by
# another user, at another time gives the same bytes (docs/releasing.md).
#
#   scripts/build-release.sh        prints the binary's path and its SHA-256
set -euo pipefail
cd "$(dirname "$0")/.."

case "$(uname -m)" in
  x86_64) target=x86_64-unknown-linux-gnu ;;
  aarch64 | arm64) target=aarch64-unknown-linux-gnu ;;
  *) echo "build-release: no static target for $(uname -m)" >&2; exit 2 ;;
esac
cargo_home=${CARGO_HOME:-$HOME/.cargo}
sysroot=$(rustc --print sysroot)
# Paths of this machine must not reach the binary: panic locations and C assertions name
# files, so every prefix is mapped to a fixed one.
maps="--remap-path-prefix=$PWD=/sluice --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$sysroot=/rustc"
export RUSTFLAGS="-C target-feature=+crt-static $maps ${RUSTFLAGS:-}"
export CFLAGS="-ffile-prefix-map=$PWD=/sluice -ffile-prefix-map=$cargo_home=/cargo ${CFLAGS:-}"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
cargo build --release --locked --target "$target" --bin sluice >&2
binary=${CARGO_TARGET_DIR:-target}/$target/release/sluice
# A dynamic executable names its loader (PT_INTERP); a static one has none.
if readelf -l "$binary" | grep -q 'program interpreter'; then
  echo "build-release: $binary is dynamically linked" >&2
  exit 1
fi
echo "$binary"
sha256sum "$binary" | cut -d' ' -f1
