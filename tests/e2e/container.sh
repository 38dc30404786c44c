#!/usr/bin/env bash
# The container test: the static release binary (scripts/build-release.sh) in the image of the
# Dockerfile, built with podman from the prebuilt binary (no image is pulled), then run by
# tests/e2e/container.py. Installs podman and runc from the distribution when missing.
#
#   tests/e2e/container.sh [--only NAME] [--verbose]
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
  echo "container: installing podman and runc" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc) >&2
fi
VENV=$(tests/e2e/venv.sh)

built=$(scripts/build-release.sh)
binary=${built%%$'\n'*}
scripts/container-context.sh "$binary" >/dev/null
image="localhost/sluice:test-$$"
podman=(podman --runtime runc --cgroup-manager=cgroupfs)
"${podman[@]}" build --quiet --format docker --build-arg BINARY=prebuilt -t "$image" . >/dev/null
trap '"${podman[@]}" rmi -f "$image" >/dev/null 2>&1 || true' EXIT
"$VENV/bin/python" tests/e2e/container.py --image "$image" --compose "$VENV/bin/podman-compose" "$@"
