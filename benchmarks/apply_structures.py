"""MaskNet structures side by side at 112² (``bench_apply.py --structures A,U-small,U``): section ``structures``.

Each structure's net under onnxruntime (fixed fp32 .onnx as face mode runs it, dynamic fp32 / fp16 / int8 .onnx,
fp32 .ort) at one thread count, rounds interleaved over the structures and the sgemm roof so load hits them alike;
each row carries the structure's parameters, GFLOP (``spec.flops``), the rate reached and its ratio to onnxruntime's
own sgemm at the same thread count (``_common.sgemm_roof``, sampled once per round, best sample). Writes
``apply_structures.json``, never ``apply.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import loadavg, print_table, sgemm_roof, write_json


def bench_structures(names: list[str], folder: Path, threads: int, repeats: int, rounds: int = 5) -> tuple[list[dict], dict]:
    """Best median (over interleaved rounds) of δ at 112² per (structure, variant); returns (rows, sgemm roof)."""
    from benchmarks.bench_apply import make_models, timeit
    from hyperobf.device_runtime import SessionConfig, load_model
    from hyperobf.spec import flops

    x = np.random.default_rng(1).random((1, 3, 112, 112), dtype=np.float32)
    cases: dict[tuple[str, str], tuple[object, dict]] = {}  # (structure, variant) -> (callable, row base)
    for name in names:
        sub = folder / name
        sub.mkdir()
        spec, _, paths, _ = make_models(name, sub)
        base = {"structure": spec.name, "params": spec.num_params(), "gflop": flops(spec, 112, 112) / 1e9}
        for key in ("onnx-fp32-fixed", "onnx-fp32-dynamic", "onnx-fp16-dynamic", "onnx-int8-dynamic", "ort-fp32-dynamic"):
            if key in paths:
                m = load_model(paths[key], config=SessionConfig(threads=threads))
                cases[(spec.name, key)] = (lambda m=m: m.delta(x), base)
    roof = sgemm_roof(threads)
    medians: dict[tuple[str, str], list[float]] = {k: [] for k in cases}
    best: dict[tuple[str, str], tuple[float, float]] = {}
    for _ in range(rounds):
        roof.sample()
        for key, (fn, base) in cases.items():
            med, p10 = timeit(fn, repeats)
            medians[key].append(round(med, 3))
            if key not in best or med < best[key][0]:
                best[key] = (med, p10)
    rows = []
    for key, (_, base) in cases.items():
        ms, p10 = best[key]
        rate = base["gflop"] / ms * 1e3
        rows.append({"section": "structures", **base, "gflop": round(base["gflop"], 4), "variant": key[1], "size": 112,
                     "threads": threads, "ms": round(ms, 3), "p10_ms": round(p10, 3), "round_medians_ms": medians[key],
                     "gflop_per_s": round(rate, 2), "ratio_to_sgemm": round(rate / roof.value, 3),
                     "load_1m": loadavg()[0]})
    return rows, roof.as_dict()


def main_structures(a: argparse.Namespace) -> int:
    names = [s.strip() for s in a.structures.split(",") if s.strip()]
    threads = int(a.threads.split(",")[0])
    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-structures-") as tmp:
        rows, roof = bench_structures(names, Path(tmp), threads, 5 if a.quick else a.repeats, 1 if a.quick else 5)
    print_table(rows, ["structure", "variant", "params", "gflop", "ms", "p10_ms", "gflop_per_s", "ratio_to_sgemm", "load_1m"],
                f"\n112², {threads} thread(s): δ per image, best median of interleaved rounds; sgemm roof "
                f"{roof['value']:.1f} GFLOP/s (onnxruntime MatMul {roof['n']}³, best of {len(roof['samples'])})")
    payload = {"structures": names, "repeats": a.repeats, "load_start": load_start, "load_end": loadavg(),
               "roofs": {f"sgemm_{threads}t": roof}, "rows": rows}
    print(f"\nwrote {write_json('apply_structures', payload, a.out)}")
    return 0
