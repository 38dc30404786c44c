#!/usr/bin/env bash
# The Python environment of the end-to-end suites, made once and reused: Open WebUI 0.12.4
# (which brings the openai package), LiteLLM, LangChain, podman-compose and componentize-py (which
# builds the Python pipelines of the WebAssembly scenarios), the latter four
# constrained to what Open WebUI installed so they change none of it. Prints its path.
#
# Cached under ${E2E_OPEN_WEBUI_CACHE:-~/.cache/sluice-e2e}/venv-<version> (about 4 GB and a
# few minutes the first time). Needs python3.11 and PyPI.
set -euo pipefail

# E2E_OPEN_WEBUI_VERSION: another Open WebUI release (issue 21's matrix: 0.10.2, 0.6.43),
# cached beside the default one.
OWUI_VERSION=${E2E_OPEN_WEBUI_VERSION:-0.12.4}
CACHE=${E2E_OPEN_WEBUI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-e2e}
VENV=$CACHE/venv-$OWUI_VERSION
WANT="open-webui==$OWUI_VERSION"
CLIENTS="litellm==1.97.0 langchain-openai==1.3.3 podman-compose==1.6.0 componentize-py==0.25.1"

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
  echo "e2e: installing $WANT into $VENV (first run: a few minutes)" >&2
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  "$python" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$WANT" >&2
  echo "$WANT" > "$VENV/.installed"
  rm -f "$VENV/.clients"
fi
# The client libraries are tested against 0.12.4 only; older releases pin older packages
# (0.10.2's conflict with LiteLLM 1.97) and only the Open WebUI suite runs against them.
if [ "$OWUI_VERSION" = 0.12.4 ] && [ "$(cat "$VENV/.clients" 2>/dev/null)" != "$CLIENTS" ]; then
  echo "e2e: installing $CLIENTS" >&2
  "$VENV/bin/pip" freeze --disable-pip-version-check | grep -v '^-e' > "$VENV/constraints.txt"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -c "$VENV/constraints.txt" $CLIENTS >&2
  echo "$CLIENTS" > "$VENV/.clients"
fi
echo "$VENV"
