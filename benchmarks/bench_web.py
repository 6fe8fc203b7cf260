"""The web client (web/, onnxruntime-web WASM in headless Chromium) beside the Python runtime, same machine.

    python benchmarks/bench_web.py [--model user.onnx] [--structure D] [--repeats 5] [--threads 1 4]

Protects a 112² image (one MaskNet pass, no resize) and a 12 MP JPEG (4000×3000, whole mode: work size 192,
the default DSSIM budget mid) in the page — served from 127.0.0.1 by web/serve.py's handler (cross-origin
isolated, so WASM threads are available) and driven by web/test/drive.mjs — for each ``--threads`` value, and
with the Python runtime (whole.whole_photo, the same budget, onnxruntime with the same thread count).
Browser rows: the page's own stage timings (decode, resize, MaskNet, budget, apply, measure; medians over
``--repeats`` after one warm-up); Python rows: the same stages' wall time, decode included (Pillow).
WebGPU is not measured: the page vendors onnxruntime-web's WASM build only, and headless Chromium here runs
with --disable-gpu. Needs node, Chromium and ``npm ci`` in web/. Writes ``web.json`` (machine stamp, load).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "web"))

from benchmarks._common import loadavg, print_table, write_json  # noqa: E402

STAGES = ["decode", "resize", "perturb", "budget", "apply", "measure", "total"]


def build_model(path: Path, structure: str) -> Path:
    """A user's MaskNet of ``structure`` from a fresh HyperNet (PSP side: torch), dynamic shape."""
    import torch

    from hyperobf.export.onnx_graph import build_onnx
    from hyperobf.model_meta import build_metadata
    from hyperobf.models.hypernet import HyperNet
    from hyperobf.spec import builtin_spec

    spec = builtin_spec(structure)
    torch.manual_seed(0)
    with torch.no_grad():
        params = {k: v[0].numpy() for k, v in HyperNet(spec).generate(1).items()}
    path.write_bytes(build_onnx(spec, params, "dynamic", build_metadata(spec, "bench", "0" * 64, shape="dynamic"))
                     .SerializeToString())
    return path


def images(d: Path) -> dict[str, Path]:
    from PIL import Image

    rng = np.random.default_rng(0)

    def photo(h: int, w: int) -> Image.Image:
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        a = np.stack([x / w * 200 + 20, y / h * 180 + 30, 128 + 90 * np.sin(x / 37 + y / 23)], -1)
        return Image.fromarray(np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8))

    photo(112, 112).save(d / "face112.png")
    photo(3000, 4000).save(d / "photo12mp.jpg", quality=90)
    return {"112²": d / "face112.png", "12 MP": d / "photo12mp.jpg"}


def browser(model: Path, imgs: dict[str, Path], threads: int, repeats: int, chromium: str, d: Path) -> list[dict]:
    import serve as web_serve

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        type("Quiet", (web_serve.Handler,), {"log_message": lambda *a: None}), directory=str(REPO / "web")))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/?threads={threads}"
    steps = [{"do": "open"}, {"do": "model", "file": str(model)}]
    for name, p in imgs.items():
        work = 112 if name == "112²" else 192
        steps += [{"do": "photo", "file": str(p), "work_size": work, "budget": "mid", "tag": name}] * (repeats + 1)
    plan = {"url": url, "chromium": chromium, "out": str(d / f"out{threads}"), "steps": steps, "timeout_ms": 300000}
    (d / "plan.json").write_text(json.dumps(plan))
    try:
        r = subprocess.run(["node", str(REPO / "web" / "test" / "drive.mjs"), str(d / "plan.json")],
                           capture_output=True, text=True, timeout=1800)
    finally:
        srv.shutdown()
    if r.returncode:
        raise SystemExit(f"browser run failed: {r.stderr[-800:]}")
    res = json.loads((d / f"out{threads}" / "result.json").read_text())["steps"]
    info = res[1].get("model") or {}
    rows = []
    for name in imgs:
        runs = [x for s, x in zip(steps, res) if s.get("tag") == name][1:]  # first one: warm-up
        bad = [x for x in runs if x.get("error") or x.get("message")]
        if bad:
            raise SystemExit(f"browser run failed on {name}: {bad[0]}")
        row = {"side": "browser (WASM)", "image": name, "threads": info.get("threads", threads)}
        for k in STAGES:
            vals = [x["timings"][k] for x in runs if k in (x.get("timings") or {})]
            row[k] = statistics.median(vals) if vals else None
        rows.append(row)
    return rows


def python_rows(model: Path, imgs: dict[str, Path], threads: int, repeats: int) -> list[dict]:
    from hyperobf.device_runtime import load_model
    from hyperobf.device_runtime.files import open_image
    from hyperobf.device_runtime.whole import whole_photo

    m = load_model(model, threads=threads)
    rows = []
    for name, p in imgs.items():
        work = 112 if name == "112²" else 192
        times: dict[str, list[float]] = {k: [] for k in STAGES}
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            img = open_image(p).image.convert("RGB")
            t1 = time.perf_counter()
            _, _, tm, _ = whole_photo(img, m, work / min(img.size), budget=(0.012, float(m.spec.rho_pixel)))
            t2 = time.perf_counter()
            if i == 0:
                continue
            times["decode"].append((t1 - t0) * 1000)
            for k, v in tm.items():
                times[k].append(v * 1000)
            times["total"].append((t2 - t0) * 1000)
        rows.append({"side": "Python (onnxruntime)", "image": name, "threads": threads,
                     **{k: statistics.median(v) if v else None for k, v in times.items()}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="a user's .onnx (default: structure --structure from a fresh HyperNet)")
    ap.add_argument("--structure", default="D")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--out", type=Path, default=None, help="folder for web.json (default benchmarks/results)")
    a = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not (chromium and shutil.which("node") and (REPO / "web" / "vendor" / "ort.wasm.min.mjs").exists()):
        raise SystemExit("needs node, chromium and `npm ci` in web/")
    load_start = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        model = a.model or build_model(d / "model.onnx", a.structure)
        imgs = images(d)
        rows = []
        for t in a.threads:
            rows += browser(model, imgs, t, a.repeats, chromium, d)
            rows += python_rows(model, imgs, t, a.repeats)
    print_table(rows, ["side", "image", "threads", *STAGES], "ms per image (medians); budget: preset mid")
    path = write_json("web", {"rows": rows, "model": str(a.model or f"structure {a.structure}"),
                              "repeats": a.repeats, "load_start": load_start, "load_end": loadavg(),
                              "webgpu": "not measured (WASM build only; headless Chromium with --disable-gpu)"},
                      a.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
