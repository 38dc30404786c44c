#!/usr/bin/env bash
# Every test of sluice, on a fresh machine: the Rust suites (unit, integration, a throwaway
# PostgreSQL for the replica tests), the end-to-end suites (the real Open WebUI, the official
# openai SDK, LiteLLM and LangChain, the README's own commands), a real browser (headless
# Chromium) on Open WebUI's admin pages and chat, and the container image (built with podman
# from the static release binary, then run). Screenshots of failing browser steps are kept in
# tests/browser/artifacts (or $BROWSER_ARTIFACTS) for CI to collect.
#
#   tests/run.sh            everything
#   tests/run.sh --rust     only `cargo test --workspace`
#
# Installs what it needs: PostgreSQL, Chromium, podman and runc from the distribution's
# packages when missing, playwright-core from npm, Open WebUI 0.12.4 with the clients, 0.10.2 and 0.6.43 into cached Python 3.11 environments (tests/e2e/venv.sh). Ends with one summary line per suite; exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

only_rust=false
[ "${1:-}" = "--rust" ] && only_rust=true

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
if [ -z "${TEST_PG_URL:-}" ]; then
  echo "== PostgreSQL for the replica tests (tests/pg/start.sh)"
  eval "$(tests/pg/start.sh)"
  trap 'eval "$TEST_PG_STOP"' EXIT
fi

summaries=()
status=0

echo "== cargo test --workspace"
log=$(mktemp)
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
rust_status=${PIPESTATUS[0]}
set -e
summaries+=("$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "cargo test: %d passed, %d failed", p, f }' "$log")")
[ "$rust_status" = 0 ] || status=1

# suite NAME TITLE COMMAND...: runs one suite, keeps its last "N passed, M failed" line.
suite() {
  local name=$1 title=$2 code
  shift 2
  echo "== $title"
  set +e
  "$@" 2>&1 | tee "$log"
  code=${PIPESTATUS[0]}
  set -e
  summaries+=("$name: $(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || echo "did not finish (exit $code)")")
  [ "$code" = 0 ] || status=1
}

if ! $only_rust; then
  # The binary `cargo test` built: a plain `cargo build` has other dependency features and
  # would build everything again.
  export E2E_SLUICE_BIN="${CARGO_TARGET_DIR:-target}/debug/sluice"
  suite e2e "end-to-end (tests/e2e/run.sh)" tests/e2e/run.sh
  BROWSER_ARTIFACTS="${BROWSER_ARTIFACTS:-${CI_ARTIFACTS:-tests/browser/artifacts}}" \
    suite browser "a real browser on Open WebUI (tests/browser/run.sh)" tests/browser/run.sh
  suite container "the container image (tests/e2e/container.sh)" tests/e2e/container.sh
fi

echo "== summary"
printf '%s\n' "${summaries[@]}"
exit $status
