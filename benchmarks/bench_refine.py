"""Hybrid refinement latency (issue 12.2): onnxruntime ms per signed-gradient step on ONE thread for the
dlib (shipped, MIT) and MobileFaceNet (research) step graphs, and the K that keeps a photo with one
face within ``--budget`` seconds (default 2) on one core.

    python benchmarks/bench_refine.py [--models ../shared/models] [--refiners DIR] [--repeats 20]

What is timed (all onnxruntime, ``SessionConfig(threads=1)``, the runtime's own session options):

* ``step``  — one call of step.onnx (1×3×112×112), each call fed the previous call's δ, as the device
  runs them; ``embed`` — embed.onnx once (e0 = Φ(x), once per face); ``k10`` — ``Refiner.refine`` with
  K = 10 end to end (checks that K steps cost ≈ embed + K·step).
* ``photo`` — the rest of protecting one photo with one face, K = 0: decode (PNG), SCRFD detection,
  alignment, the user's MaskNet (structure ``--structure``, weights from a freshly initialised HyperNet:
  latency depends on shapes only), map-back, add, JPEG encode. Photo: scikit-image's astronaut (512²).
* ``k_max`` = ⌊(budget − photo − embed) / step⌋, and ``k_max_refine_only`` = ⌊(budget − embed) / step⌋.

Rounds interleave the embedders so load hits them alike. This machine's 2 cores are shared: the JSON
stores ``uptime`` and the load averages at the start and end, and each row the 1-minute load.
Refiners are exported into a temporary folder unless ``--refiners DIR`` holds ``DIR/<name>/`` already
(export time is recorded when exported here). Writes ``refine.json``.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import loadavg, print_table, write_json  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
EMBEDDERS = {"dlib": "dlib_resnet_faceapi", "mobilefacenet": "mobilefacenet.onnx"}


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _ms(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _p10(ts: list[float]) -> float:
    ts = sorted(ts)
    return ts[max(0, len(ts) // 10 - 1)]


def get_refiner(name: str, models: Path, reuse: Path | None, tmp: Path) -> tuple[Path, float | None]:
    """A refiner folder for ``name``: reused from ``reuse/<name>`` or exported now (seconds recorded)."""
    if reuse is not None and (reuse / name / "refiner.json").is_file():
        return reuse / name, None
    from hyperobf.refine.bundle import export_refiner
    from hyperobf.refine.embedders import load_refine_embedder

    which = "dlib" if name == "dlib" else models / EMBEDDERS[name]
    t = time.perf_counter()
    export_refiner(load_refine_embedder(which, models), tmp / name)
    return tmp / name, time.perf_counter() - t


def face_batch(size: int = 112) -> np.ndarray:
    """(1, 3, 112, 112) float32: a real aligned face when ../shared has one, else an embedded synthetic one."""
    from hyperobf.refine.bundle import parity_faces

    glint = SHARED / "data" / "faces" / "glint24"
    return parity_faces(size, 1, glint if glint.is_dir() else None)


def masknet(structure: str, tmp: Path) -> Path:
    """A fixed-shape (1×3×112×112) fp32 ONNX MaskNet of ``structure`` with seeded HyperNet weights."""
    import torch

    from hyperobf.export.onnx_graph import build_onnx
    from hyperobf.model_meta import build_metadata
    from hyperobf.models.hypernet import HyperNet
    from hyperobf.spec import builtin_spec

    spec = builtin_spec(structure)
    torch.manual_seed(0)
    with torch.no_grad():
        params = {k: v[0].numpy().copy() for k, v in HyperNet(spec).generate(1).items()}
    path = tmp / f"masknet_{structure}.onnx"
    path.write_bytes(build_onnx(spec, params, "fixed", build_metadata(spec, "bench", "0" * 64)).SerializeToString())
    return path


def photo_ms(model_path: Path, detector: Path, repeats: int) -> dict:
    """Median ms per stage of protecting the astronaut photo (one face) with K = 0, one thread."""
    from PIL import Image
    from skimage import data as skdata

    from hyperobf.device_runtime import ProtectOptions, SessionConfig, load_model, protect
    from hyperobf.device_runtime.detect import FaceDetector

    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, "PNG")
    png = buf.getvalue()
    cfg = SessionConfig(threads=1)
    model, det = load_model(model_path, config=cfg), FaceDetector(detector, cfg)
    stages: dict[str, list[float]] = {}
    for i in range(repeats + 2):
        t = time.perf_counter()
        img = Image.open(io.BytesIO(png))
        img.load()
        dec = time.perf_counter() - t
        res = protect(img, model, det, ProtectOptions(mode="face"))
        t = time.perf_counter()
        res.image.save(io.BytesIO(), "JPEG", quality=95)
        enc = time.perf_counter() - t
        if res.faces != 1:
            raise SystemExit(f"expected one face in the benchmark photo, found {res.faces}")
        if i >= 2:  # warm-up
            for k, v in {"decode": dec, **res.timings, "encode": enc}.items():
                stages.setdefault(k, []).append(v * 1e3)
    med = {k: round(statistics.median(v), 2) for k, v in stages.items()}
    return {"stages_ms": med, "total_ms": round(sum(med.values()), 1), "photo": "skimage astronaut 512x512 PNG -> JPEG q95"}


def bench_embedders(refiners: dict[str, Path], repeats: int, rounds: int) -> list[dict]:
    from hyperobf.device_runtime import SessionConfig
    from hyperobf.device_runtime.refine import load_refiner
    from hyperobf.refine.bundle import start_deltas

    x = face_batch()
    d0 = start_deltas(x, 0.03)
    refs = {n: load_refiner(p, config=SessionConfig(threads=1)) for n, p in refiners.items()}
    times: dict[str, dict[str, list[float]]] = {n: {"step": [], "embed": [], "k10": []} for n in refs}
    loads: dict[str, list[float]] = {n: [] for n in refs}
    for n, r in refs.items():  # warm-up
        r.refine(x, d0, k=2)
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for n, r in refs.items():
            e0 = r.embed(x)
            feed = {"x": x, "delta": d0.copy(), "e0": e0, "step": np.array(r.step_size, np.float32),
                    "rho": np.array(0.03, np.float32)}

            def one_step() -> None:
                feed["delta"] = r.step_session.run(["delta_next"], feed)[0]

            times[n]["step"] += _ms(one_step, per_round)
            times[n]["embed"] += _ms(lambda: r.embed(x), max(1, per_round // 2))
            times[n]["k10"] += _ms(lambda: r.refine(x, d0, k=10, rho=0.03), 1)
            loads[n].append(round(os.getloadavg()[0], 2))
    rows = []
    for n, r in refs.items():
        t = times[n]
        rows.append({"embedder": n, "licence": r.licence, "step_ms": round(statistics.median(t["step"]), 2),
                     "step_p10_ms": round(_p10(t["step"]), 2), "step_calls": len(t["step"]),
                     "embed_ms": round(statistics.median(t["embed"]), 2),
                     "k10_ms": round(statistics.median(t["k10"]), 1),
                     "k10_predicted_ms": round(statistics.median(t["embed"]) + 10 * statistics.median(t["step"]), 1),
                     "load_1m": loads[n], "step_file_mb": round((refiners[n] / "step.onnx").stat().st_size / 2**20, 1),
                     "embed_file_mb": round((refiners[n] / "embed.onnx").stat().st_size / 2**20, 1)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path(os.environ.get("HYPEROBF_MODELS", SHARED / "models")))
    ap.add_argument("--refiners", type=Path, default=None, help="reuse DIR/<embedder>/ refiner folders when present")
    ap.add_argument("--structure", default="D", help="the user's MaskNet structure in the photo timing")
    ap.add_argument("--repeats", type=int, default=20, help="step calls per embedder (spread over --rounds)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds for one photo with one face")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = {"uptime": _uptime(), "loadavg": loadavg()}
    print(f"start: {start['uptime']}")
    names = [n for n, f in EMBEDDERS.items() if (a.models / f).exists()]
    if not names:
        print(f"no embedder under {a.models}: nothing to time")
        return 2
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        refiners, export_s = {}, {}
        for n in names:
            refiners[n], export_s[n] = get_refiner(n, a.models, a.refiners, tmp)
        after_export = {"uptime": _uptime(), "loadavg": loadavg()}
        rows = bench_embedders(refiners, a.repeats, a.rounds)
        scrfd = a.models / "scrfd_2.5g_bnkps.onnx"
        photo = photo_ms(masknet(a.structure, tmp), scrfd, 10) if scrfd.is_file() else None
    budget_ms = a.budget * 1e3
    for r in rows:
        r["export_s"] = None if export_s[r["embedder"]] is None else round(export_s[r["embedder"]], 1)
        r["k_max_refine_only"] = math.floor((budget_ms - r["embed_ms"]) / r["step_ms"])
        if photo is not None:
            r["photo_ms"] = photo["total_ms"]
            r["k_max"] = math.floor((budget_ms - photo["total_ms"] - r["embed_ms"]) / r["step_ms"])
    end = {"uptime": _uptime(), "loadavg": loadavg()}
    print_table(rows, ["embedder", "step_ms", "step_p10_ms", "embed_ms", "k10_ms", "k10_predicted_ms", "photo_ms",
                       "k_max", "k_max_refine_only", "step_file_mb"],
                f"refinement on 1 thread (onnxruntime), budget {a.budget:g} s per photo with one face")
    if photo is not None:
        print(f"photo without refinement ({a.structure} MaskNet, SCRFD, 1 thread): {photo['stages_ms']}")
    print(f"end: {end['uptime']}")
    path = write_json("refine", {"rows": rows, "photo": photo, "budget_s": a.budget, "threads": 1,
                                 "structure": a.structure, "start": start, "after_export": after_export, "end": end,
                                 "load_start": start["loadavg"], "load_end": end["loadavg"],
                                 "note": "2 shared cores: a training job may hold the other core; see uptime/loadavg"},
                      a.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
