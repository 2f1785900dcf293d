#!/usr/bin/env bash
# Create .venv (if missing) and install jaxaccel with the given extras (default: dev,bench).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev,bench}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${extras}]"
