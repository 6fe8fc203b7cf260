#!/usr/bin/env bash
# CI check (issue 14): a Python 3.13 venv with only the device extra (`pip install ".[device]"`, no torch)
# protects a photo with a MaskNet that the PSP side (the active venv: train + export, torch) issued, then
# creates an account on `hyperobf serve`, fetches a MaskNet from it and protects the photo again (--overwrite).
#   bash scripts/ci_device_py313.sh            # the active venv must have the psp extra (hyperobf train)
# Python 3.13 is $PY313, else python3.13 on PATH, else the newest pyenv 3.13.x; none found is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# (a pyenv shim on PATH may exist without being runnable, so every candidate is tried)
py313=""
for cand in ${PY313:-} "$(command -v python3.13 || true)" \
        $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3 2>/dev/null | sort -rV); do
    if [ -n "$cand" ] && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
        py313="$cand"
        break
    fi
done
if [ -z "$py313" ]; then
    echo "error: no Python 3.13 found (set PY313=/path/to/python3.13)" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
t0=$SECONDS

# PSP side (this venv): a tiny HyperNet, two training steps, one user's MaskNet, and a photo.
hyperobf train -o "$work/run" --structure tiny --epochs 1 --set steps_per_epoch=2 --set batch_images=4 \
    --set nets_per_step=2 >/dev/null
hyperobf export --checkpoint "$work/run/checkpoint.pt" --users 1 --out "$work/models" --shape dynamic >/dev/null
model="$(ls "$work"/models/*.onnx | head -n 1)"
python - "$work/photo.jpg" <<'EOF'
import sys

import numpy as np
from PIL import Image

rng = np.random.default_rng(0)  # a smooth gradient plus noise: content for the net, no face needed
y, x = np.mgrid[0:240, 0:320]
img = np.stack([x / 320 * 255, y / 240 * 255, np.full_like(x, 128.0)], -1) + rng.normal(0, 8, (240, 320, 3))
Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(sys.argv[1], quality=92)
EOF

# User side: Python 3.13, the checkout installed with only the device extra.
"$py313" -m venv "$work/venv313"
"$work/venv313/bin/python" -m pip install -q --disable-pip-version-check ".[device]"
"$work/venv313/bin/python" - <<'EOF'
import importlib.util
import sys

assert sys.version_info[:2] == (3, 13), sys.version
missing = [m for m in ("torch", "fastapi", "onnx") if importlib.util.find_spec(m) is not None]
assert not missing, f"the device install pulled in {missing}"
EOF
out="$("$work/venv313/bin/hyperobf" protect "$work/photo.jpg" -m "$model" --manifest "$work/models/manifest.jsonl")"
echo "$out"
echo "$out" | grep -q "^protected 1, skipped 0, failed 0$"
"$work/venv313/bin/python" -c "
from PIL import Image; im = Image.open('$work/photo_protected.jpg'); assert im.size == (320, 240), im.size"

# The same user through the PSP: `hyperobf serve` (this venv) on a loopback port; account + fetch from 3.13.
port="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
hyperobf serve --checkpoint "$work/run/checkpoint.pt" --db "sqlite:///$work/psp.db" --port "$port" \
    >"$work/serve.log" 2>&1 &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
    "$work/venv313/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v1/health', timeout=1)" \
        2>/dev/null && break
    kill -0 "$serve_pid" 2>/dev/null || { tail -n 20 "$work/serve.log" >&2; exit 1; }
    sleep 0.5
done
grep -q "verifier open" "$work/serve.log" || { echo "error: the PSP's start-up log names no verifier" >&2; exit 1; }
export HYPEROBF_ACCOUNT="$work/account.json"
"$work/venv313/bin/hyperobf" account create --server "http://127.0.0.1:$port"
"$work/venv313/bin/hyperobf" fetch -o "$work/fetched" --shape dynamic
fetched="$(ls "$work"/fetched/*.onnx | head -n 1)"
out="$("$work/venv313/bin/hyperobf" protect "$work/photo.jpg" -m "$fetched" --manifest "$work/fetched/manifest.jsonl" --overwrite)"
echo "$out" | grep -q "^protected 1, skipped 0, failed 0$" || { echo "$out" >&2; exit 1; }
kill "$serve_pid"
echo "python 3.13 device install: $("$work/venv313/bin/python" -V), protected a photo in $((SECONDS - t0)) s"
