#!/usr/bin/env bash
# The whole GPU part of the benchmarks in one go, everything written into one folder:
#   generation on CUDA (N = 10 .. 10^5; fp32 / tf32 / bf16; with and without the copy to host; the batched
#   reference, the one-net loop and one ensemble member), K users' nets applied in one grouped-conv call
#   (K = 1, 16, 256, 1024), onnxruntime's CUDA EP if onnxruntime-gpu is installed (else a row says it was skipped),
#   the PNG plots and the generation target check. Designed to finish in under 3 minutes on one H100/H200.
#
#   bash benchmarks/gpu_bench.sh [OUT_DIR]          (default: benchmarks/results/gpu)
#
# Files (at most 5, all directly in OUT_DIR): gpu_bench.log, generation.json, generation.png,
# batched_apply.json, batched_apply.png. Exit status: that of the generation benchmark, else of the target check.
#
# Python: the first of $PYTHON, .venv/bin/python, python3, /opt/torch/.venv/bin/python3 whose torch sees CUDA
# (a carried .venv usually holds a CPU-only torch; the GPU machines' image has CUDA torch in python3). The package is
# taken from src/ through PYTHONPATH, so nothing is installed. GPU_BENCH_ALLOW_CPU=1 accepts a CPU torch and runs
# tiny sizes: a dry run of this script's plumbing on a machine without a GPU.
set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$REPO/benchmarks/results/gpu}"
mkdir -p "$OUT" || { echo "error: cannot create $OUT"; exit 1; }
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_bench.log"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$REPO/src:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export MPLCONFIGDIR="${MPLCONFIGDIR:-/tmp/mpl-gpu-bench}"

main() {
echo "== gpu_bench.sh $(date -u +%FT%TZ)  repo $REPO  out $OUT"
echo "== host: $(uname -srm), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu,clocks.sm --format=csv 2>&1 \
  || echo "nvidia-smi: not available"

# --- a python whose torch sees CUDA ------------------------------------------------------------------------
PY=""
for cand in "${PYTHON:-}" "$REPO/.venv/bin/python" python3 /opt/torch/.venv/bin/python3 python; do
  [ -n "$cand" ] || continue
  if ! command -v "$cand" >/dev/null 2>&1; then continue; fi
  if timeout 120 "$cand" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' >/dev/null 2>&1; then
    PY="$cand"; break
  fi
  echo "   python candidate $cand: no CUDA-enabled torch (or no torch)"
done
DEVICE=cuda
QUICK_GEN=()
QUICK_APPLY=()
if [ -z "$PY" ]; then
  if [ "${GPU_BENCH_ALLOW_CPU:-0}" = "1" ]; then
    PY="$REPO/.venv/bin/python"; command -v "$PY" >/dev/null 2>&1 || PY=python3
    DEVICE=cpu
    QUICK_GEN=(--structure tiny --ns 10,100 --repeats 2 --loop-cap 10 --member-steps 1 --member-batch 2 --dtypes fp32)
    QUICK_APPLY=(--structure tiny --k 1,2 --repeats 1)
    echo "== GPU_BENCH_ALLOW_CPU=1: dry run on CPU with $PY (tiny sizes; numbers mean nothing)"
  else
    echo "error: no python with a CUDA-enabled torch found (tried \$PYTHON, .venv, python3, /opt/torch/.venv)"
    return 1
  fi
fi
"$PY" - <<'EOF'
import sys, torch
print(f"== python {sys.executable} {sys.version.split()[0]}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
      f"device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}")
for mod in ("numpy", "matplotlib", "kornia", "onnx", "onnxruntime"):
    try:
        m = __import__(mod)
        extra = ""
        if mod == "onnxruntime":
            extra = f" providers={m.get_available_providers()}"
        print(f"   {mod} {getattr(m, '__version__', '?')}{extra}")
    except Exception as e:  # report, don't stop: the benchmarks fall back or skip
        print(f"   {mod}: not importable ({type(e).__name__})")
import hyperobf, hyperobf.models.hypernet  # from src/ via PYTHONPATH
print(f"   hyperobf from {hyperobf.__file__}")
EOF
[ $? -eq 0 ] || { echo "error: the package does not import with $PY (PYTHONPATH=$PYTHONPATH)"; return 1; }

step() {  # step NAME TIMEOUT_S CMD...: run with a hard time limit, report rc and seconds
  local name=$1 limit=$2; shift 2
  local t=$(date +%s)
  echo; echo "== $name (limit ${limit}s, load $(cut -d' ' -f1 /proc/loadavg 2>/dev/null))"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "== $name: rc $rc in $(( $(date +%s) - t )) s"
  return $rc
}

# 1. generation: all N, fp32/tf32/bf16, +- host copy, reference, loop (<= 1000), one ensemble member.
#    --budget-s stops starting new measurements in time; the JSON is rewritten as rows come in.
step generation 150 "$PY" "$REPO/benchmarks/bench_generate.py" --device "$DEVICE" --out "$OUT" --no-plot \
  --budget-s 90 ${QUICK_GEN[@]+"${QUICK_GEN[@]}"}
GEN_RC=$?

# 2. K users' nets in one batched call (K = 1, 16, 256, 1024; fp32, bf16) + onnxruntime CUDA EP if present.
step batched_apply 80 "$PY" "$REPO/benchmarks/bench_batched_apply.py" --device "$DEVICE" --out "$OUT" --no-plot --budget-s 50 \
  ${QUICK_APPLY[@]+"${QUICK_APPLY[@]}"}

# 3. plots from whatever JSON is there, and the target check (generation: <= 1.0x the batched reference kernel).
step plots 60 "$PY" "$REPO/benchmarks/plots.py" "$OUT"
step check_targets 30 "$PY" "$REPO/benchmarks/check_targets.py" "$OUT" --targets generate
CHECK_RC=$?

echo; echo "== done in $(( $(date +%s) - T0 )) s; files in $OUT:"; ls -la "$OUT"
if [ "$GEN_RC" -ne 0 ]; then return "$GEN_RC"; fi
return "$CHECK_RC"
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
