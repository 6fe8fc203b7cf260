#!/usr/bin/env bash
# The evaluation harness at full scale on one GPU, in ONE call (issue 6):
#   E1, E2, E7, E4, E3 (required: together <= ~7 min on an H100), then E8, E5, E6 while the time budget lasts.
#
#   bash scripts/gpu_eval.sh [OUT_DIR]            (default: results/gpu)
#
# Environment (all optional):
#   HYPEROBF_FACES   faces root with glint24/ celeba299/   (default devdata/faces, built by scripts/make_devdata.sh)
#   HYPEROBF_MODELS  models root: mobilefacenet.onnx, dlib_resnet_faceapi/   (default devdata/models)
#   GPU_EVAL_EXPERIMENTS  comma list (default e1,e2,e7,e4,e3,e8,e5,e6)
#   GPU_EVAL_SCALE        full | reduced | tiny (default full)
#   GPU_EVAL_START_S      start no experiment after this many seconds (default 330)
#   GPU_EVAL_HARD_S       hard wall-clock limit of the whole run (default 540)
#   GPU_EVAL_ALLOW_CPU=1  dry run on a machine without CUDA (use with GPU_EVAL_SCALE=tiny)
#   GPU_EVAL_ARCHIVE      also pack OUT_DIR (without checkpoints) into this .tar.gz
#   GPU_EVAL_PSP_SET      space-separated key=value PSP training settings, each passed as --psp-set
#                         (e.g. "objective=feature structure=D rho_pixel=0.05 lambda_div=30")
# Python: the first of $PYTHON, python3, /opt/torch/.venv/bin/python3, .venv/bin/python whose torch sees CUDA.
# The package is used from src/ (PYTHONPATH); kornia is installed from .whl/ into /tmp/site when missing.
set -u -o pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$REPO/results/gpu}"
mkdir -p "$OUT" || { echo "error: cannot create $OUT"; exit 1; }
OUT="$(cd "$OUT" && pwd)"
FACES="${HYPEROBF_FACES:-$REPO/devdata/faces}"
MODELS="${HYPEROBF_MODELS:-$REPO/devdata/models}"
EXPS="${GPU_EVAL_EXPERIMENTS:-e1,e2,e7,e4,e3,e8,e5,e6}"
SCALE="${GPU_EVAL_SCALE:-full}"
START_S="${GPU_EVAL_START_S:-330}"
HARD_S="${GPU_EVAL_HARD_S:-540}"
LOG="$OUT/gpu_eval.log"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1 MPLCONFIGDIR=/tmp/mpl-gpu-eval
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"

main() {
  echo "== gpu_eval.sh $(date -u +%FT%TZ) repo $REPO out $OUT scale $SCALE experiments $EXPS"
  echo "== host $(uname -srm), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
  [ -d "$FACES" ] || { echo "error: faces root $FACES not found (bash scripts/make_devdata.sh)"; return 1; }
  PY=""
  for cand in "${PYTHON:-}" python3 /opt/torch/.venv/bin/python3 "$REPO/.venv/bin/python"; do
    [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 || continue
    if "$cand" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' >/dev/null 2>&1; then PY="$cand"; break; fi
  done
  DEVICE=cuda
  if [ -z "$PY" ]; then
    [ "${GPU_EVAL_ALLOW_CPU:-0}" = "1" ] || { echo "error: no python with a CUDA torch"; return 1; }
    PY="${PYTHON:-$REPO/.venv/bin/python}"; DEVICE=cpu
    echo "== GPU_EVAL_ALLOW_CPU=1: running on CPU with $PY"
  fi
  if ! "$PY" -c 'import kornia' >/dev/null 2>&1; then
    if ls "$REPO"/.whl/*.whl >/dev/null 2>&1; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$REPO"/.whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
  fi
  "$PY" -c 'import sys, torch, kornia, onnxruntime, matplotlib, hyperobf.eval.runner as r
print("== python", sys.version.split()[0], "torch", torch.__version__, "kornia", kornia.__version__,
      "onnxruntime", onnxruntime.__version__, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")' \
    || { echo "error: imports failed"; return 1; }
  local t0=$(date +%s) PSP_ARGS="" kv
  for kv in ${GPU_EVAL_PSP_SET:-}; do PSP_ARGS="$PSP_ARGS --psp-set $kv"; done
  timeout --signal=INT --kill-after=20 "$HARD_S" "$PY" -m hyperobf.cli eval run "$EXPS" --scale "$SCALE" --faces "$FACES" \
    --models "$MODELS" --out "$OUT" --device "$DEVICE" --deadline-s "$START_S" $PSP_ARGS
  local rc=$?
  echo "== eval exit $rc after $(( $(date +%s) - t0 )) s"
  if [ -n "${GPU_EVAL_ARCHIVE:-}" ]; then
    tar czf "$GPU_EVAL_ARCHIVE" --exclude='*.pt' -C "$(dirname "$OUT")" "$(basename "$OUT")" && echo "== packed $GPU_EVAL_ARCHIVE"
  fi
  return $rc
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
