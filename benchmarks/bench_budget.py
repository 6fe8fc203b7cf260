"""The device's budget rule (device_runtime/budget.py): ms per 112² face on one core, and parity with the
evaluation's rule (eval/limit.py's fit_budget, torch + kornia).

    python benchmarks/bench_budget.py [--faces DIR] [--model user.onnx] [--refiner DIR] [--n 24] [--repeats 5]

* Faces: aligned 112² crops under ``--faces`` (ImageFolder layout, the first ``--n`` in sorted order, spread over
  the identities), else the astronaut (scikit-image) at ``--n`` crops. δ: the MaskNet ``--model``'s own δ when
  given (a real net's pattern), else a smooth random δ at the clip. Every row is timed under each preset's ρ.
* ``ssim`` — one DSSIM test of a face against its kept original moments (``Reference.dssim``);
  ``reference`` — the original's moments, once per face; ``fit`` — the whole rule per face
  (``fit_scale``: 1 test when δ fits at s = 1, 13 when over budget), with the tests counted.
  Wall and process-CPU ms, medians over faces × ``--repeats``; numpy is single-threaded on this path (no BLAS).
* ``refine_step`` (``--refiner``): one refinement step (onnxruntime, 1 thread) on the same faces, interleaved
  with ``fit`` so load hits both alike — the cost the budget is compared with.
* Parity (torch importable): numpy vs torch 8-bit outputs per face (equal / differing, largest difference in
  levels), the largest |DSSIM numpy − kornia|, and how many numpy outputs kornia puts above ρ (and by how much).

Writes ``budget.json`` (machine stamp, load before/after).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import loadavg, print_table, write_json  # noqa: E402
from hyperobf.device_runtime import budget as B  # noqa: E402
from hyperobf.presets import PRESETS  # noqa: E402


def load_faces(folder: Path | None, n: int) -> tuple[np.ndarray, str]:
    """(n, 3, 112, 112) float32 on the 8-bit grid, and where they came from."""
    from PIL import Image

    if folder is not None:
        ids = sorted(p for p in folder.iterdir() if p.is_dir())
        per = [sorted(f for f in d.iterdir() if f.suffix.lower() in {".png", ".jpg", ".jpeg"}) for d in ids]
        files = [f for k in range(max(map(len, per), default=0)) for fs in per if k < len(fs) for f in [fs[k]]][:n]
        imgs = [np.asarray(Image.open(f).convert("RGB").resize((112, 112), Image.BILINEAR)) for f in files]
        src = f"{folder} ({len(files)} faces over {len(ids)} identities)"
    else:
        from skimage import data

        a, rng = Image.fromarray(data.astronaut()), np.random.default_rng(0)
        imgs = []
        for _ in range(n):
            side = int(rng.integers(140, 300))
            x0, y0 = int(rng.integers(120, 512 - side)), int(rng.integers(0, 512 - side))
            imgs.append(np.asarray(a.crop((x0, y0, x0 + side, y0 + side)).resize((112, 112), Image.BILINEAR)))
        src = f"skimage astronaut, {n} crops"
    return np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32) / 255.0, src


def deltas(x: np.ndarray, model: Path | None) -> tuple[np.ndarray, float, str]:
    """δ (N, 3, 112, 112), the clip ρ_pixel, and what δ is."""
    if model is not None:
        from hyperobf.device_runtime import load_model

        m = load_model(model, threads=1)
        return m.delta(x), float(m.spec.rho_pixel), f"MaskNet {model.name} (structure {m.spec.name})"
    rng = np.random.default_rng(1)
    d = B.blur(rng.normal(0, 1, x.shape).astype(np.float32))
    return (0.05 * np.tanh(4 * d)).astype(np.float32), 0.05, "smooth random δ, clip 0.05"


def ms(fn, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU ms of ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - c) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
    return wall, cpu


def parity(x: np.ndarray, d: np.ndarray, rho: float, rho_pixel: float) -> dict:
    import torch

    from hyperobf.eval.limit import fit_budget as fit_torch
    from hyperobf.train.losses import dssim as dssim_torch

    torch.set_num_threads(1)
    got = B.fit_budget(x, d, rho, rho_pixel)
    want = fit_torch(torch.from_numpy(x), torch.from_numpy(d), rho, rho_pixel).numpy()
    levels = np.abs(np.round(got * 255) - np.round(want * 255)).reshape(len(x), -1).max(1)
    k_np = dssim_torch(torch.from_numpy(got), torch.from_numpy(x)).numpy()
    n_np = B.dssim(x, got)
    return {"faces": len(x), "equal": int((levels == 0).sum()), "differing": int((levels > 0).sum()),
            "max_levels": int(levels.max()), "max_abs_dssim_np_vs_kornia": float(np.abs(k_np - n_np).max()),
            "kornia_over_rho": int((k_np > rho).sum()), "kornia_max_excess": float(max(0.0, (k_np - rho).max()))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, help="aligned 112² faces, ImageFolder layout (default: the astronaut)")
    ap.add_argument("--model", type=Path, help="a MaskNet .onnx whose δ to budget (default: smooth random δ)")
    ap.add_argument("--refiner", type=Path, help="refiner folder: time one refinement step beside the rule")
    ap.add_argument("--n", type=int, default=24, help="faces")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per face")
    ap.add_argument("--no-parity", action="store_true", help="skip the torch comparison")
    ap.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    a = ap.parse_args(argv)
    load_start = loadavg()
    x, src = load_faces(a.faces, a.n)
    d, rho_pixel, what = deltas(x, a.model)
    ref = None
    if a.refiner is not None:
        from hyperobf.device_runtime.refine import load_refiner

        ref = load_refiner(a.refiner, threads=1)
        e0 = ref.embed(x)
    rows, par = [], {}
    for name, p in PRESETS.items():
        tests: list[int] = []
        walls: dict[str, list[float]] = {"ssim": [], "reference": [], "fit": [], "refine_step": []}
        cpus: dict[str, list[float]] = {k: [] for k in walls}
        for i in range(len(x)):
            xi, di = x[i:i + 1], d[i:i + 1]
            r = B.Reference(xi)
            yi = B.quantise(xi + di)
            counted = []
            B.fit_scale(xi, di, p.rho, rho_pixel, measure=lambda y, idx: (counted.append(1), r.dssim(y, idx))[1])
            tests.append(len(counted))
            for key, fn in [("reference", lambda: B.Reference(xi)), ("ssim", lambda: r.dssim(yi)),
                            ("fit", lambda: B.fit_scale(xi, di, p.rho, rho_pixel))]:
                w, c = ms(fn, a.repeats)
                walls[key] += w
                cpus[key] += c
                if key == "fit" and ref is not None:  # interleaved with the rule
                    w, c = ms(lambda: ref.step_session.run(["delta_next"], {
                        "x": xi, "delta": di, "e0": e0[i:i + 1], "step": np.array(ref.step_size, np.float32),
                        "rho": np.array(rho_pixel, np.float32)}), a.repeats)
                    walls["refine_step"] += w
                    cpus["refine_step"] += c
        for key in walls:
            if walls[key]:
                rows.append({"preset": name, "rho": p.rho, "what": key, "wall_ms": statistics.median(walls[key]),
                             "cpu_ms": statistics.median(cpus[key]),
                             "tests_per_face": statistics.mean(tests) if key == "fit" else None,
                             "over_budget_faces": sum(t > 1 for t in tests) if key == "fit" else None})
        if not a.no_parity:
            try:
                par[name] = parity(x, d, p.rho, rho_pixel)
            except ImportError:
                par[name] = {"skipped": "torch not importable"}
    print(f"faces: {src}; δ: {what}; load at start {load_start}")
    print_table(rows, ["preset", "rho", "what", "wall_ms", "cpu_ms", "tests_per_face", "over_budget_faces"],
                "budget rule, ms per 112² face (1 thread)")
    if par:
        print_table([{"preset": k, **v} for k, v in par.items()],
                    ["preset", "faces", "equal", "differing", "max_levels", "max_abs_dssim_np_vs_kornia",
                     "kornia_over_rho", "kornia_max_excess"], "numpy vs torch (eval.limit.fit_budget)")
    payload = {"faces": src, "delta": what, "rho_pixel": rho_pixel, "repeats": a.repeats, "rows": rows,
               "parity": par, "load_start": load_start, "load_end": loadavg()}
    path = write_json("budget", payload, a.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
