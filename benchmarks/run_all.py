"""Run every CPU benchmark in turn (each in its own process), then the plots and the target check.

    python benchmarks/run_all.py [--out DIR] [--only generate,export,apply,batched] [--quick]

Steps: bench_generate.py, bench_export.py, bench_apply.py, bench_batched_apply.py -> plots.py -> check_targets.py.
A benchmark script that is not in the checkout (yet) is reported and skipped. Scripts are run with
``--out DIR`` only when their --help offers it; otherwise they write to their own default folder.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, loadavg, print_table  # noqa: E402

HERE = Path(__file__).resolve().parent
STEPS = {  # name -> (script, extra args for --quick: tiny sizes, for smoke tests of the harness)
    "generate": ("bench_generate.py", ["--structure", "tiny", "--ns", "10,100", "--repeats", "2", "--repeats-large", "1",
                                       "--loop-cap", "10", "--member-steps", "1", "--member-batch", "2"]),
    "export": ("bench_export.py", ["--quick"]),
    "apply": ("bench_apply.py", ["--quick"]),
    "batched": ("bench_batched_apply.py", ["--k", "1,2", "--repeats", "1", "--structure", "tiny"]),
}


def _accepts_out(script: Path) -> bool:
    try:
        out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--out" in out.stdout


def run_step(name: str, args: list[str], timeout: float) -> dict:
    t = time.perf_counter()
    print(f"\n=== {name}: {' '.join(args)}   (load {loadavg()})", flush=True)
    try:
        rc = subprocess.run([sys.executable, *args], timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    return {"step": name, "rc": rc, "seconds": round(time.perf_counter() - t, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run all CPU benchmarks, plots and the target check.")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--only", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--quick", action="store_true", help="tiny sizes for our own scripts (harness smoke test)")
    p.add_argument("--step-timeout", type=float, default=3600)
    p.add_argument("--no-check", action="store_true", help="skip check_targets.py")
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in STEPS]
    if bad:
        print(f"error: unknown step(s) {', '.join(bad)}; choose from {', '.join(STEPS)}", file=sys.stderr)
        return 2
    results = []
    for name in only:
        script, quick = STEPS[name]
        path = HERE / script
        if not path.is_file():
            print(f"\n=== {name}: {script} is not in this checkout, skipped")
            results.append({"step": name, "rc": "absent", "seconds": 0.0})
            continue
        extra = ["--out", str(args.out)] if _accepts_out(path) else []
        if args.quick:
            extra += quick
        if name in ("generate", "batched"):
            extra.append("--no-plot")  # plots.py below draws every figure from the JSON
        results.append(run_step(name, [str(path), *extra], args.step_timeout))
    results.append(run_step("plots", [str(HERE / "plots.py"), str(args.out)], 600))
    rc = 0
    if not args.no_check:
        res = run_step("check_targets", [str(HERE / "check_targets.py"), str(args.out)], 600)
        results.append(res)
        rc = res["rc"] if isinstance(res["rc"], int) else 1
    print_table(results, ["step", "rc", "seconds"], title="\nrun_all summary")
    failed = [r["step"] for r in results if r["rc"] not in (0, "absent") and r["step"] != "check_targets"]
    return 1 if failed else rc


if __name__ == "__main__":
    sys.exit(main())
