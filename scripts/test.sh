#!/usr/bin/env bash
# Set up (if needed) and run the default test suite (tests marked `slow` excluded: add `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,bench,llm,science
.venv/bin/python -m pytest -q -n 2 -p no:cacheprovider "$@"
