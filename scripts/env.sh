#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install the agent into it.
# Sourced by the other scripts; safe to run again (it only installs what changed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/python" -m pip install --quiet --upgrade pip
fi
stamp="$ROOT/.venv/.installed-$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  "$ROOT/.venv/bin/python" -m pip install --quiet -e "$ROOT[test]"
  touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
export CADENCE_DATA="${CADENCE_DATA:-$ROOT/../shared/data}"
export MPLCONFIGDIR="${MPLCONFIGDIR:-${TMPDIR:-/tmp}/cadence-mpl}"
