"""Helpers of the web-client tests (test_web.py: Node layer; test_web_browser.py: headless Chromium):
where node and Chromium are, running the page's modules in Node, and the browser run's servers and
test files. No tests here."""


import functools
import hashlib
import http.server
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime_support import build_model


ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
NODE = shutil.which("node")
TOKEN = "good-token"


def _chromium() -> str | None:
    for c in (os.environ.get("HYPEROBF_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if c and shutil.which(c):
            return shutil.which(c)
    return None


def need_node() -> str:
    if not NODE:
        pytest.skip("node is not installed (the web client's modules are tested in Node)")
    return NODE


def need_browser() -> str:
    need_node()
    if not (WEB / "vendor" / "ort.wasm.min.mjs").exists() or not (WEB / "node_modules" / "playwright-core").is_dir():
        pytest.skip("web/vendor or web/node_modules missing: run `npm ci` in web/ (onnxruntime-web, playwright-core)")
    chromium = _chromium()
    if not chromium:
        pytest.skip("no Chromium (apt-get install chromium)")
    return chromium


def run_node(jobs: list[dict], tmp: Path) -> list:
    plan = tmp / f"jobs{random.randrange(1 << 30)}.json"
    plan.write_text(json.dumps(jobs))
    r = subprocess.run([need_node(), str(WEB / "test" / "pycompat.mjs"), str(plan)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def canonical(v) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def f64hex(x: float) -> str:
    return struct.pack(">d", x).hex()




def jpeg_with_exif(img: Image.Image, path: Path, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x010F] = "HyperObfTestCam"  # Make
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}  # GPS
    img.save(path, quality=90, exif=exif.tobytes())
    return path


def hostile_files(d: Path, photo: Path) -> dict[str, Path]:
    out = {}
    (d / "notes.jpg").write_bytes(b"%PDF-1.4 not a photo at all\n" * 50)
    out["nonimage"] = d / "notes.jpg"
    data = photo.read_bytes()
    (d / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    out["truncated"] = d / "cut.jpg"
    small = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(small, "JPEG")
    b = bytearray(small.getvalue())
    i = 2
    while b[i + 1] != 0xC0:  # patch the frame header to 10000 × 10000: 100 MP, refused from the header
        i += 2 + int.from_bytes(b[i + 2:i + 4], "big")
    b[i + 5:i + 9] = (10000).to_bytes(2, "big") * 2
    (d / "huge.jpg").write_bytes(bytes(b))
    out["huge"] = d / "huge.jpg"
    return out


class Recorder:
    """Every request that reached our servers: the page's static server (with a fake PSP download) and a proxy."""

    def __init__(self) -> None:
        self.static: list[tuple[str, str, dict]] = []
        self.proxy: list[tuple[str, str]] = []
        self.lock = threading.Lock()


def start_servers(rec: Recorder, model_bytes: bytes) -> tuple[http.server.ThreadingHTTPServer, ...]:
    sys.path.insert(0, str(WEB))
    try:
        import serve as web_serve
    finally:
        sys.path.remove(str(WEB))
    sha = hashlib.sha256(model_bytes).hexdigest()

    class Static(web_serve.Handler):
        def log_message(self, *a) -> None:  # noqa: ANN002
            pass

        def do_GET(self) -> None:  # noqa: N802
            with rec.lock:
                rec.static.append((self.command, self.path, dict(self.headers)))
            if self.path.startswith("/v1/masknets/"):  # the PSP's download endpoint, same origin here
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error":"unauthorized"}')
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(model_bytes)))
                self.send_header("X-Content-SHA256", sha)
                self.send_header("Content-Disposition", 'attachment; filename="user0042.onnx"')
                self.end_headers()
                self.wfile.write(model_bytes)
                return
            super().do_GET()

        def do_POST(self) -> None:  # noqa: N802
            with rec.lock:
                rec.static.append((self.command, self.path, dict(self.headers)))
            self.send_error(405)

    class Proxy(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a) -> None:  # noqa: ANN002
            pass

        def _refuse(self) -> None:
            with rec.lock:
                rec.proxy.append((self.command, self.path))
            self.send_error(403)

        do_GET = do_POST = do_PUT = do_HEAD = do_CONNECT = do_OPTIONS = _refuse  # noqa: N815

    static = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Static, directory=str(WEB)))
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    for s in (static, proxy):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    return static, proxy

def raw_file(d: Path, name: str, arr: np.ndarray) -> str:
    """Write ``arr``'s raw bytes (what web/'s node jobs read: .u8 / .f32) to d/name; returns the path as str."""
    path = d / name
    path.write_bytes(arr.tobytes())
    return str(path)


def image_array(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like test image: smooth gradients, edges and noise (uint8, h × w × 3)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / max(w, 1) * 200 + 20, y / max(h, 1) * 180 + 30, 128 + 90 * np.sin(x / 37.0 + y / 23.0)], -1)
    blocks = ((x // 53 + y // 41) % 2)[..., None] * 40
    return np.clip(base + blocks + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def tampered_models(d: Path) -> dict[str, Path]:
    import onnx

    good = build_model(d / "good.onnx")
    out = {
        "digest": build_model(d / "digest.onnx", meta_overrides={"hyperobf.spec_digest": json.dumps("0" * 64)}),
        "json": build_model(d / "json.onnx", meta_overrides={"hyperobf.model_id": "{not json"}),
        "version": build_model(d / "version.onnx", meta_overrides={"hyperobf.format_version": "2"}),
        "record": build_model(d / "record.onnx", meta_overrides={"hyperobf.protection": json.dumps({"version": 7})}),
        "spec": build_model(d / "spec.onnx", meta_overrides={"hyperobf.spec": json.dumps({"name": "x", "layers": []})}),
    }
    m = onnx.load(str(good))
    del m.metadata_props[:]
    onnx.save(m, str(d / "plain.onnx"))
    out["plain"] = d / "plain.onnx"
    (d / "text.onnx").write_bytes(b"this is not a model\n" * 20)
    out["text"] = d / "text.onnx"
    (d / "cut.onnx").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    out["cut"] = d / "cut.onnx"
    return out
