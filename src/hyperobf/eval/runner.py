"""Run experiments E1–E8 in one process (sharing trained nets and attackers) and write reports."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Callable

from .context import EvalContext
from .exp_diversity import run_e6
from .exp_mix import run_e3, run_e4, run_e5, run_e8
from .exp_protect import run_e1, run_e2, run_e7
from .report import write_index, write_results
from .scales import EvalScale

EXPERIMENTS: dict[str, Callable] = {"e1": run_e1, "e2": run_e2, "e3": run_e3, "e4": run_e4, "e5": run_e5,
                                    "e6": run_e6, "e7": run_e7, "e8": run_e8}


def run(names: list[str], scale: EvalScale, faces_root: Path, models_root: Path | None, out: Path, seed: int = 0,
        device: str = "auto", sources: dict | None = None, log: Callable = print,
        deadline_s: float = 0.0, threads: int = 0, psp_overrides: dict | None = None) -> tuple[list[dict], list[str]]:
    """Returns (summaries, failures). Each experiment's folder is written as soon as it finishes.
    With ``deadline_s`` > 0, experiments not yet started when that much time has passed are skipped
    (listed as failures: 'not started, time budget spent')."""
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    t_all = time.perf_counter()
    if threads:  # on a shared CPU, 1 thread avoids OpenMP spin-waiting (measured 15x faster under load)
        import torch

        torch.set_num_threads(threads)
    ctx = EvalContext(scale, Path(faces_root), Path(models_root) if models_root else None, Path(out), seed, device,
                      sources or {"psp": "glint24", "fr": "celeba299", "public": "celeba299"}, log=log, threads=threads,
                      psp_overrides=dict(psp_overrides or {}))
    log(f"data loaded in {ctx.timings['load_data']:.1f} s on {ctx.device}: {len(ctx.data.targets)} targets, "
        f"{len(ctx.data.distractor_train.classes)} distractors, {len(ctx.data.public)} public faces")
    summaries, failures = [], []
    for name in names:
        t0 = time.perf_counter()
        if deadline_s and t0 - t_all > deadline_s:
            failures.append(f"{name}: not started, time budget of {deadline_s:.0f} s spent")
            log(f"{name}: skipped (deadline)")
            continue
        log(f"{name}: running ...")
        try:
            result = EXPERIMENTS[name](ctx)
        except Exception as e:  # one experiment failing must not lose the others' results
            failures.append(f"{name}: {type(e).__name__}: {e}")
            log(f"{name}: FAILED {type(e).__name__}: {e}")
            (Path(out) / name).mkdir(parents=True, exist_ok=True)
            (Path(out) / name / "error.txt").write_text(traceback.format_exc())
            continue
        result["seconds"] = time.perf_counter() - t0
        if ctx.embedders_missing:
            result.setdefault("skipped", {})["embedders"] = f"not found under {models_root}: {', '.join(ctx.embedders_missing)}"
        folder = write_results(ctx, name, result)
        summaries.append({"name": name, "title": result["title"], "comparison": result["comparison"],
                          "seconds": result["seconds"]})
        log(f"{name}: done in {result['seconds']:.1f} s -> {folder / 'report.md'}")
        write_index(Path(out), summaries)
    log(f"total {time.perf_counter() - t_all:.1f} s; timings: " +
        ", ".join(f"{k} {v:.1f}s" for k, v in ctx.timings.items()))
    ctx.write_json("timings.json", {"total_s": time.perf_counter() - t_all, **ctx.timings})
    return summaries, failures
