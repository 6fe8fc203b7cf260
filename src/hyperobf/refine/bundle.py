"""Write a refiner folder (``hyperobf export-refiner``): step.onnx + embed.onnx + refiner.json,
after checking the ONNX step against the torch step on a few faces (refused when they disagree).

Defaults: step size η = 1.5/255 and K = 10 steps, the frontier's measured best under the device's budget
rule (results/frontier: dlib identification 0.12 / 0.16 at DSSIM 0.012 and 0.08 / 0.04 at 0.017; K = 25 did
worse, since its larger δ is scaled down further to fit the budget). η must stay ≥ 1/255 (one 8-bit grey
level) to survive the photo's rounding.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..refiner_meta import DEFAULT_STEP, DEFAULT_STEPS, EMBED_FILE, META_FILE, STEP_FILE, build_meta
from .embedders import FaceEmbedder
from .export import (EMBED_INPUTS, EMBED_OUTPUTS, STEP_INPUTS, STEP_OUTPUTS, Parity, check_parity, example_inputs,
                     op_counts, to_onnx, trace_embed, trace_step)

DEFAULT_RHO = 0.03  # the specs' default per-pixel clip


class RefinerExportError(ValueError):
    """The refiner could not be exported or failed its parity check (one-line reason)."""


def parity_faces(size: int, n: int = 4, faces_dir: str | Path | None = None, seed: int = 0) -> np.ndarray:
    """(n, 3, size, size) float32 in [0, 1]: the first n faces of an ImageFolder, else the embedded synthetic faces."""
    from ..train.data import load_image_folder, synthetic_faces

    fs = load_image_folder(faces_dir, size, max_identities=n, max_per_identity=1) if faces_dir else synthetic_faces(n_identities=n, per_identity=1,
                                                                                size=size, seed=seed)
    idx = np.linspace(0, len(fs.images) - 1, min(n, len(fs.images))).astype(int)
    return fs.images[torch.from_numpy(idx)].float().div(255.0).numpy()


def start_deltas(x: np.ndarray, rho: float, seed: int = 0) -> np.ndarray:
    """Seeded δ₀ ~ U(−ρ, ρ), kept inside the image range: (N, 3, S, S) float32 (a stand-in for a MaskNet's)."""
    d = np.random.default_rng(seed).uniform(-rho, rho, x.shape).astype(np.float32)
    return np.clip(x + d, 0.0, 1.0) - x


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RefinerExportError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RefinerExportError(f"--out {out} is not empty (use --overwrite to replace a refiner there)")


def export_refiner(embedder: FaceEmbedder, out: str | Path, step_size: float = DEFAULT_STEP,
                   rho_pixel: float = DEFAULT_RHO, default_steps: int = DEFAULT_STEPS, faces_dir: str | Path | None = None,
                   n_faces: int = 4, overwrite: bool = False) -> dict:
    """Export, check parity, write the folder; returns refiner.json's dict. Nothing is written on failure."""
    out = Path(out)
    check_out(out, overwrite)
    if not 0 < step_size <= 1 or not 0 < rho_pixel <= 1 or default_steps < 0:
        raise RefinerExportError("step size and rho_pixel must be in (0, 1], default steps >= 0")
    info = embedder.info
    t0 = time.perf_counter()
    gm, rewritten = trace_step(embedder, info.input_size, info.dim)
    step_model = to_onnx(gm, example_inputs(info.input_size, info.dim), STEP_INPUTS, STEP_OUTPUTS)
    embed_model = to_onnx(trace_embed(embedder, info.input_size), (torch.rand(1, 3, info.input_size, info.input_size),),
                          EMBED_INPUTS, EMBED_OUTPUTS)
    t1 = time.perf_counter()
    step_bytes, embed_bytes = step_model.SerializeToString(), embed_model.SerializeToString()
    x = parity_faces(info.input_size, n_faces, faces_dir)
    par: Parity = check_parity(embedder, step_bytes, embed_bytes, x, start_deltas(x, rho_pixel), step_size, rho_pixel)
    if not par.ok:
        raise RefinerExportError(f"ONNX step disagrees with torch: gradient signs {par.sign_agreement:.5f}, "
                                 f"δ within 1e-5 {par.delta_within_1e5:.5f} (need 0.999), "
                                 f"embedding diff {par.embed_max_abs_diff:.2e}")
    files = {"step": hashlib.sha256(step_bytes).hexdigest(), "embed": hashlib.sha256(embed_bytes).hexdigest()}
    meta = build_meta(info.as_dict(), step_size, rho_pixel, default_steps, files,
                      parity={**par.as_dict(), "faces_source": str(faces_dir) if faces_dir else "synthetic"},
                      rewritten_backward_ops=rewritten, step_ops=op_counts(step_model),
                      export_seconds=round(t1 - t0, 2), hyperobf=__version__, torch=torch.__version__,
                      created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    _write_all(out, {STEP_FILE: step_bytes, EMBED_FILE: embed_bytes,
                     META_FILE: (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()})
    return meta


def _write_all(out: Path, blobs: dict[str, bytes]) -> None:
    """Write every file under a temporary name first, then rename them all (no half-written refiner)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = {name: out / f".{name}.tmp{os.getpid()}" for name in blobs}
    try:
        for name, data in blobs.items():
            tmp[name].write_bytes(data)
        for name in blobs:
            os.replace(tmp[name], out / name)
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
