#!/usr/bin/env bash
# The end-to-end tests: the real Open WebUI 0.12.4 against sluice (tests/e2e/e2e.py), the
# official openai package, LiteLLM and LangChain against sluice (tests/e2e/clients.py), and the
# README's commands as written (tests/e2e/readme.py).
#
#   tests/e2e/run.sh [--only NAME] [--verbose] [--calls] [--keep-logs]
#
# Open WebUI goes into a Python 3.11 virtual environment cached under
# ${E2E_OPEN_WEBUI_CACHE:-~/.cache/sluice-e2e}/venv-<version> (about 4 GB and a few minutes the
# first time; reused while the version matches). Needs cargo, python3.11 and PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."

OWUI_VERSION=0.12.4
CACHE=${E2E_OPEN_WEBUI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-e2e}
VENV=$CACHE/venv-$OWUI_VERSION
WANT="open-webui==$OWUI_VERSION"

python=""
for candidate in "${E2E_PYTHON:-}" python3.11 python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "e2e: Python 3.11 is needed (set E2E_PYTHON)" >&2
  exit 2
fi

if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$WANT" ]; then
  echo "e2e: installing $WANT into $VENV (first run: a few minutes)"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  "$python" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$WANT"
  echo "$WANT" > "$VENV/.installed"
else
  echo "e2e: reusing $VENV"
fi

# LiteLLM and LangChain for clients.py, constrained to what Open WebUI installed so it changes none of it.
CLIENTS="litellm==1.97.0 langchain-openai==1.3.3"
if [ "$(cat "$VENV/.clients" 2>/dev/null)" != "$CLIENTS" ]; then
  echo "e2e: installing $CLIENTS"
  "$VENV/bin/pip" freeze --disable-pip-version-check | grep -v '^-e' > "$VENV/constraints.txt"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -c "$VENV/constraints.txt" $CLIENTS
  echo "$CLIENTS" > "$VENV/.clients"
fi

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
"$VENV/bin/python" tests/e2e/e2e.py --sluice "$sluice" --open-webui "$VENV/bin/open-webui" "$@" \
  | tee "$log" || status=1
clients_args=()
for arg in "$@"; do
  case "$arg" in --calls|--keep-logs) ;; *) clients_args+=("$arg") ;; esac
done
"$VENV/bin/python" tests/e2e/clients.py --sluice "$sluice" "${clients_args[@]}" | tee -a "$log" || status=1
"$VENV/bin/python" tests/e2e/readme.py --sluice "$sluice" "${clients_args[@]}" | tee -a "$log" || status=1
passed=0 failed=0
while read -r p _ f _; do
  passed=$((passed + p)) failed=$((failed + f))
done < <(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log")
echo "$passed passed, $failed failed"
exit $status
