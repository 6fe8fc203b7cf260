#!/usr/bin/env bash
# The project's test command (fast suite; add `-m slow` for the long ones).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest "$@"
