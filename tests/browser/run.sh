#!/usr/bin/env bash
# The real-browser end-to-end test: headless Chromium (playwright-core) on Open WebUI 0.12.4,
# where an administrator signs up, registers sluice as a connection, edits its valves, and
# chats (tests/browser/scenarios.mjs, started by tests/browser/browser.py).
#
#   tests/browser/run.sh [--only NAME] [--keep-logs]
#
# Needs: Debian's chromium (installed here if missing; root or sudo), node and npm (the
# playwright-core of package-lock.json is installed here if missing), and the Python
# environment of tests/e2e/venv.sh (cached; made the first time, about 4 GB).
# E2E_SLUICE_BIN: a sluice binary built already; without it, `cargo build --bin sluice` runs.
# BROWSER_ARTIFACTS: where the screenshots of failing steps go (default tests/browser/artifacts).
# Prints one PASS/FAIL line per scenario and `N passed, M failed`; exits 0 only if all passed.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! [ -x /usr/bin/chromium ]; then
  echo "browser: installing Debian's chromium" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y chromium >&2 || { $sudo apt-get update >&2 && $sudo apt-get install -y chromium >&2; }
fi
if ! [ -f tests/browser/node_modules/playwright-core/package.json ]; then
  echo "browser: installing playwright-core" >&2
  (cd tests/browser && npm ci --no-audit --no-fund >&2)
fi

VENV=$(tests/e2e/venv.sh)

sluice=${E2E_SLUICE_BIN:-}
if [ -z "$sluice" ]; then
  cargo build --locked --bin sluice
  sluice=${CARGO_TARGET_DIR:-target}/debug/sluice
fi

exec "$VENV/bin/python" tests/browser/browser.py --sluice "$sluice" --open-webui "$VENV/bin/open-webui" "$@"
