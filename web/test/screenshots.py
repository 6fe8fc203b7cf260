"""Screenshots of the page for the README (web/screenshots/): before (model loaded) and after protecting a photo.

    python web/test/screenshots.py          # needs the dev venv (torch, onnx), node, Chromium, `npm ci` in web/

The photo is generated here (a drawn landscape: no faces, nothing from ../shared); the model is a tiny-spec
MaskNet whose δ is a Laplacian high-pass (tests/runtime_support.highpass_model's weights) with an
example protection record, so the status and warning lines show.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WEB = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(WEB))
sys.path.insert(0, str(WEB.parent / "tests"))


def landscape(w: int = 4000, h: int = 3000) -> Image.Image:
    rng = np.random.default_rng(7)
    y = np.linspace(0, 1, h)[:, None, None]
    sky = (1 - y) * np.array([70, 130, 210]) + y * np.array([250, 200, 150])
    img = Image.fromarray(np.broadcast_to(sky, (h, w, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse([w * 0.7, h * 0.12, w * 0.82, h * 0.28], fill=(255, 236, 170))
    for k, (col, base) in enumerate([((92, 110, 140), 0.55), ((60, 96, 80), 0.68)]):
        xs = np.linspace(0, w, 60)
        ys = h * base - h * 0.12 * np.abs(np.sin(xs / w * (5 + 3 * k) + k)) - rng.uniform(0, h * 0.03, 60)
        d.polygon([(0, h), *zip(xs, ys), (w, h)], fill=col)
    d.rectangle([0, h * 0.78, w, h], fill=(40, 90, 120))  # lake
    for _ in range(40):  # trees
        x, s = rng.uniform(0, w), rng.uniform(60, 180)
        yb = h * 0.78
        d.polygon([(x, yb - 3 * s), (x - s, yb), (x + s, yb)], fill=(30, 70 + int(rng.uniform(0, 40)), 40))
    img = img.filter(ImageFilter.GaussianBlur(2))
    a = np.asarray(img).astype(np.float32) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def model(path: Path) -> Path:
    from hyperobf import protection
    from runtime_support import highpass_model

    highpass_model(path, gain=12.0)
    import onnx

    m = onnx.load(str(path))
    rec = protection.merge(None, [protection.entry("mobilefacenet", "query", "glint24", 1.0, 0.911, 0.0072, 0.015,
                                                   281, 24, "hyperobf eval frontier (example record)")])
    for p in m.metadata_props:
        if p.key == "hyperobf.protection":
            p.value = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    onnx.save(m, str(path))
    return path


def main() -> None:
    import serve as web_serve

    out = WEB / "screenshots"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        landscape().save(d / "landscape.jpg", quality=90)
        model(d / "user0001.onnx")
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
            type("Quiet", (web_serve.Handler,), {"log_message": lambda *a: None}), directory=str(WEB)))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        plan = {"url": f"http://127.0.0.1:{srv.server_address[1]}/", "out": str(d / "out"), "timeout_ms": 120000,
                "chromium": shutil.which("chromium") or shutil.which("chromium-browser"),
                "steps": [{"do": "open"}, {"do": "model", "file": str(d / "user0001.onnx")},
                          {"do": "screenshot", "name": "before.png"},
                          {"do": "photo", "file": str(d / "landscape.jpg")},
                          {"do": "screenshot", "name": "after.png"}]}
        (d / "plan.json").write_text(json.dumps(plan))
        try:
            subprocess.run(["node", str(WEB / "test" / "drive.mjs"), str(d / "plan.json")], check=True)
        finally:
            srv.shutdown()
        for name in ("before.png", "after.png"):
            Image.open(d / "out" / name).convert("RGB").save(out / f"page_{name}", optimize=True)
            print(f"wrote {out / f'page_{name}'}")


if __name__ == "__main__":
    main()
