"""The refiner folder's description (``refiner.json``), written by the PSP side
(:mod:`hyperobf.refine.bundle`) and read back by the device (:mod:`hyperobf.device_runtime.refine`).
Pure Python: no torch, no onnxruntime.

A refiner folder holds ``step.onnx`` (one signed-gradient step against a frozen embedder Φ),
``embed.onnx`` (Φ itself, so the device computes e0 = Φ(x)) and ``refiner.json``::

    {"format": "hyperobf-refiner", "format_version": 1,
     "embedder": {"name", "licence", "input_size", "net_size", "dim"},
     "step_size": η, "rho_pixel": ρ, "default_steps": K,
     "files": {"step": {"file", "sha256"}, "embed": {"file", "sha256"}},
     "step_io": {...}, "embed_io": {...}, "loss": "...", "parity": {...}, ...}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# The refiner's defaults (hyperobf export-refiner; the frontier's hybrid rows use the same step):
# η = 1.5/255 and K = 10, the measured best under the device's budget rule (results/frontier/).
DEFAULT_STEP = 1.5 / 255.0
DEFAULT_STEPS = 10

FORMAT = "hyperobf-refiner"
FORMAT_VERSION = 1
META_FILE = "refiner.json"
STEP_FILE = "step.onnx"
EMBED_FILE = "embed.onnx"
STEP_IO = {"inputs": ["x", "delta", "e0", "step", "rho"], "outputs": ["delta_next", "dist", "grad_sign"]}
EMBED_IO = {"inputs": ["x"], "outputs": ["e"]}
LOSS = "untargeted: minimise -||e - e0|| on unit embeddings; delta <- clip(delta + step*sign(grad), -rho, rho)"


class RefinerMetaError(ValueError):
    """refiner.json is missing, unreadable or inconsistent (one-line reason)."""


def build_meta(embedder: dict, step_size: float, rho_pixel: float, default_steps: int, files: dict[str, str],
               **extra: object) -> dict:
    """The refiner.json dict; ``files`` maps "step"/"embed" to their sha256."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "embedder": dict(embedder),
            "step_size": float(step_size), "rho_pixel": float(rho_pixel), "default_steps": int(default_steps),
            "files": {"step": {"file": STEP_FILE, "sha256": files["step"]},
                      "embed": {"file": EMBED_FILE, "sha256": files["embed"]}},
            "step_io": STEP_IO, "embed_io": EMBED_IO, "loss": LOSS}
    meta.update(extra)
    parse_meta(meta)  # never write what the reader would refuse
    return meta


def _num(meta: dict, key: str, lo: float, hi: float) -> float:
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo < v <= hi:
        raise RefinerMetaError(f"{META_FILE}: {key} must be a number in ({lo}, {hi}], got {v!r}")
    return float(v)


def parse_meta(meta: object) -> dict:
    """Validate a refiner.json dict (RefinerMetaError with the first problem); returns it."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RefinerMetaError(f"{META_FILE}: not a HyperObf refiner description")
    if meta.get("format_version") != FORMAT_VERSION:
        raise RefinerMetaError(f"{META_FILE}: unknown refiner format version {meta.get('format_version')!r}")
    _num(meta, "step_size", 0.0, 1.0)
    _num(meta, "rho_pixel", 0.0, 1.0)
    k = meta.get("default_steps")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise RefinerMetaError(f"{META_FILE}: default_steps must be an integer >= 0")
    emb = meta.get("embedder")
    if not isinstance(emb, dict) or not all(isinstance(emb.get(f), int) and emb[f] > 0
                                            for f in ("input_size", "net_size", "dim")):
        raise RefinerMetaError(f"{META_FILE}: embedder entry needs positive input_size, net_size and dim")
    files = meta.get("files")
    for key, name in (("step", STEP_FILE), ("embed", EMBED_FILE)):
        entry = files.get(key) if isinstance(files, dict) else None
        if not isinstance(entry, dict) or entry.get("file") != name or not isinstance(entry.get("sha256"), str):
            raise RefinerMetaError(f"{META_FILE}: files.{key} must name {name} with its sha256")
    return meta


def read_meta(folder: str | Path) -> dict:
    """Read and validate ``<folder>/refiner.json``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RefinerMetaError(f"refiner folder not found: {folder}")
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise RefinerMetaError(f"{folder}: no {META_FILE} (not a refiner folder; make one with hyperobf export-refiner)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RefinerMetaError(f"cannot read {path}: {type(e).__name__}") from None
    return parse_meta(meta)
