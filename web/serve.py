#!/usr/bin/env python3
"""Serve the web client (this folder) on 127.0.0.1: ``python3 web/serve.py [--port 8017] [--host 127.0.0.1]``.

Standard library only. Adds what the page needs from a static server: JavaScript/WASM MIME types,
``Cross-Origin-Opener-Policy``/``Cross-Origin-Embedder-Policy`` (cross-origin isolation lets onnxruntime-web
use WASM threads; without them it runs single-threaded), no caching, and nothing outside this folder.
Any static host that sends those two headers works the same (the page is plain files).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
         ".html": "text/html; charset=utf-8", ".css": "text/css", ".json": "application/json",
         ".png": "image/png", ".svg": "image/svg+xml", "": "application/octet-stream"}
# Served paths: the page and its modules, vendored onnxruntime-web; never node_modules, tests or this script.
PUBLIC = ("index.html", "style.css", "src/", "vendor/", "favicon.svg")


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = TYPES

    def __init__(self, *args, directory: str = str(ROOT), **kwargs) -> None:
        super().__init__(*args, directory=directory, **kwargs)

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def public(self, path: str) -> bool:
        p = path.split("?", 1)[0].lstrip("/")
        return p == "" or (".." not in p and any(p == x or (x.endswith("/") and p.startswith(x)) for x in PUBLIC))

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self.public(self.path):
            self.send_error(404)
            return
        super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        if not self.public(self.path):
            self.send_error(404)
            return
        super().do_HEAD()

    def list_directory(self, path):  # noqa: ANN001, ANN201
        self.send_error(404)
        return None

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve the HyperObf web client.")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8017)
    a = ap.parse_args(argv)
    if not (ROOT / "vendor" / "ort.wasm.min.mjs").exists():
        print("web/vendor/ is missing: run `npm ci` in web/ first (it fetches onnxruntime-web)", file=sys.stderr)
        return 1
    server = http.server.ThreadingHTTPServer((a.host, a.port), functools.partial(Handler, directory=str(ROOT)))
    print(f"HyperObf web client on http://{a.host}:{server.server_address[1]}/  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
