#!/usr/bin/env bash
# The end-to-end tests: the real Open WebUI against sluice (tests/e2e/e2e.py) in each release
# operators run (0.12.4, 0.10.2, 0.6.43; the scenarios encode what differs), the official
# openai package, LiteLLM and LangChain against sluice (tests/e2e/clients.py), and the README's
# commands as written (tests/e2e/readme.py), and the guest kits' examples built and run as
# WebAssembly pipelines (tests/e2e/guests.py).
#
#   tests/e2e/run.sh [--only NAME] [--verbose] [--calls] [--keep-logs]
#   E2E_OPEN_WEBUI_VERSIONS="0.12.4" tests/e2e/run.sh     # one release only
#
# The Python environments are tests/e2e/venv.sh's, one per release (cached; about 8 GB and a
# few minutes each the first time, then about a minute per release per run). Needs cargo,
# python3.11 and PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSIONS=${E2E_OPEN_WEBUI_VERSIONS:-0.12.4 0.10.2 0.6.43}
VENV=$(tests/e2e/venv.sh)

# E2E_SLUICE_BIN: a binary built already (CI passes the one `cargo test` built, which has other
# dependency features than a plain `cargo build` and would otherwise be rebuilt).
sluice=${E2E_SLUICE_BIN:-}
if [ -z "$sluice" ]; then
  cargo build --locked --bin sluice
  sluice=${CARGO_TARGET_DIR:-target}/debug/sluice
fi
# Every suite runs; the last line sums them.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
for version in $VERSIONS; do
  venv=$(E2E_OPEN_WEBUI_VERSION=$version tests/e2e/venv.sh)
  "$venv/bin/python" tests/e2e/e2e.py --sluice "$sluice" --open-webui "$venv/bin/open-webui" \
    --componentize-py "$VENV/bin/componentize-py" "$@" \
    | tee -a "$log" || status=1
done
clients_args=()
for arg in "$@"; do
  case "$arg" in --calls|--keep-logs) ;; *) clients_args+=("$arg") ;; esac
done
"$VENV/bin/python" tests/e2e/clients.py --sluice "$sluice" "${clients_args[@]}" | tee -a "$log" || status=1
"$VENV/bin/python" tests/e2e/readme.py --sluice "$sluice" "${clients_args[@]}" | tee -a "$log" || status=1
# The guest kits: componentize-js from the npm registry, exactly as guests/js/package-lock.json
# names it. npm keeps a copy of the lock it installed in node_modules; a tree installed from an
# older lock (or by hand) is replaced, so what runs here is what a fresh clone gets.
if ! cmp -s guests/js/package-lock.json guests/js/node_modules/.sluice-installed-lock; then
  (cd guests/js && npm ci --silent --no-audit --no-fund &&
    cp package-lock.json node_modules/.sluice-installed-lock) >&2
fi
PATH="$VENV/bin:$PATH" "$VENV/bin/python" tests/e2e/guests.py --sluice "$sluice" \
  --componentize-py "$VENV/bin/componentize-py" "${clients_args[@]}" | tee -a "$log" || status=1
passed=0 failed=0
while read -r p _ f _; do
  passed=$((passed + p)) failed=$((failed + f))
done < <(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log")
echo "$passed passed, $failed failed"
exit $status
