#!/usr/bin/env bash
# Builds a reference-style Python pipeline into a sluice component:
#   guests/python/build.sh my_filter.py [out.wasm]
# The pipeline's id is the file's name without `.py`, as in the Python reference.
# Needs componentize-py on PATH (pip install componentize-py), or COMPONENTIZE_PY set to it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$1"
id="$(basename "$src" .py)"
out="${2:-$id.wasm}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$src" "$work/user_pipeline.py"
printf 'ID = %s\n' "\"$id\"" > "$work/sluice_build.py"
"${COMPONENTIZE_PY:-componentize-py}" -d "$here/../../wit" -w pipeline componentize app \
    -p "$here/kit" -p "$work" -o "$out"
