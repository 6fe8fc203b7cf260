#!/usr/bin/env bash
# Install HyperObf with every extra into the active environment.
# torch==2.13.0 goes first and stays pinned (constraint): a bare `torch` resolved first
# pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0 numpy
python -m pip install -q -c scripts/constraints.txt -e ".[device,psp,serve,dev,heif]"
python -m pip check
