"""On-device refinement (issue 12, hybrid): K signed-gradient steps after the MaskNet, with
onnxruntime + numpy only (never torch).

The MaskNet gives δ₀ on a 112² aligned face x; each step runs the exported step graph
(:mod:`hyperobf.refine.export`, the same math as ``hyperobf.refine.refine_torch``):

    x' = clamp(x + δ, 0, 1);  g = ∇_{x'} ‖Φ(x')/‖Φ(x')‖ − e0‖²;  δ ← clip(δ + η·sign(g), −ρ, ρ);  δ ← clamp(x + δ, 0, 1) − x

with e0 = Φ(x) from the embed graph. Only the per-pixel clip ρ is enforced here (no DSSIM check).
At δ₀ = 0 the gradient is zero and nothing moves: the MaskNet's δ₀ is the start.

    from hyperobf.device_runtime.refine import load_refiner
    ref = load_refiner("refiner/")                       # checks refiner.json, sha256s, graph signatures
    delta = ref.refine(x, delta0, k=10)                  # x, delta0: (N, 3, 112, 112) float32
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from ..refiner_meta import RefinerMetaError, read_meta
from .session import SessionConfig, make_session


class RefinerError(ValueError):
    """A refiner folder we refuse to use, or bad refinement inputs (one-line reason)."""


def _check_io(sess, name: str, inputs: dict[str, list], outputs: dict[str, list]) -> None:
    """Names and static shapes of a graph's inputs/outputs (RefinerError on mismatch)."""
    got_in = {i.name: list(i.shape) for i in sess.get_inputs()}
    got_out = {o.name: list(o.shape) for o in sess.get_outputs()}
    for want, got, kind in ((inputs, got_in, "input"), (outputs, got_out, "output")):
        if set(got) != set(want):
            raise RefinerError(f"{name}: {kind}s {sorted(got)} do not match a refiner ({sorted(want)})")
        for k, shape in want.items():
            if got[k] != shape:
                raise RefinerError(f"{name}: {kind} {k} has shape {got[k]}, expected {shape}")


def refine_delta(x: np.ndarray, delta0: np.ndarray, step_model, embed_model, k: int, step: float, rho: float,
                 e0: np.ndarray | None = None) -> np.ndarray:
    """δ_K after k steps from δ₀. x, delta0: (N, 3, S, S) float32, x in [0, 1]; step_model / embed_model:
    onnxruntime sessions of step.onnx / embed.onnx (batch 1: faces run one at a time); e0 (N, D) optional
    (else Φ(x) from embed_model). k = 0 returns δ₀ (a float32 copy)."""
    if k < 0:
        raise RefinerError("refinement steps must be >= 0")
    x = np.asarray(x, np.float32)
    delta = np.array(delta0, np.float32)  # copy: δ₀ is never written to
    if x.ndim != 4 or x.shape != delta.shape:
        raise RefinerError(f"x and delta0 must be (N, 3, S, S) of one shape, got {x.shape} and {delta.shape}")
    if k == 0:
        return delta
    s, r = np.array(step, np.float32), np.array(rho, np.float32)  # 0-d graph inputs
    out = np.empty_like(delta)
    for i in range(x.shape[0]):
        xi, di = x[i:i + 1], delta[i:i + 1]  # (1, 3, S, S)
        ei = e0[i:i + 1].astype(np.float32) if e0 is not None else embed_model.run(None, {"x": xi})[0]  # (1, D)
        for _ in range(k):
            (di,) = step_model.run(["delta_next"], {"x": xi, "delta": di, "e0": ei, "step": s, "rho": r})
        out[i] = di[0]
    return out


class Refiner:
    """A loaded refiner folder: step and embed sessions plus refiner.json (``meta``)."""

    def __init__(self, folder: str | Path, config: SessionConfig | None = None) -> None:
        folder = Path(folder)
        try:
            self.meta = read_meta(folder)
        except RefinerMetaError as e:
            raise RefinerError(str(e)) from None
        self.folder = folder
        emb = self.meta["embedder"]
        self.size, self.dim = int(emb["input_size"]), int(emb["dim"])
        self.name, self.licence = str(emb.get("name", "?")), str(emb.get("licence", "unknown"))
        self.step_size, self.rho_pixel = float(self.meta["step_size"]), float(self.meta["rho_pixel"])
        self.default_steps = int(self.meta["default_steps"])
        cfg = config or SessionConfig()
        self.step_session = self._session(cfg, "step")
        self.embed_session = self._session(cfg, "embed")
        img = [1, 3, self.size, self.size]
        _check_io(self.step_session, "step.onnx", {"x": img, "delta": img, "e0": [1, self.dim], "step": [], "rho": []},
                  {"delta_next": img, "dist": [1], "grad_sign": img})
        _check_io(self.embed_session, "embed.onnx", {"x": img}, {"e": [1, self.dim]})

    def _session(self, cfg: SessionConfig, key: str):
        entry = self.meta["files"][key]
        path = self.folder / entry["file"]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise RefinerError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"].lower():
            raise RefinerError(f"{path.name}: sha256 does not match refiner.json")
        try:
            return make_session(data, cfg)
        except Exception as e:  # onnxruntime raises its own exception types
            raise RefinerError(f"{path.name}: not a loadable ONNX model ({type(e).__name__})") from None

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Unit embeddings Φ(x): (N, 3, S, S) -> (N, D)."""
        x = np.asarray(x, np.float32)
        return np.concatenate([self.embed_session.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])

    def refine(self, x: np.ndarray, delta0: np.ndarray, k: int | None = None, step: float | None = None,
               rho: float | None = None) -> np.ndarray:
        """δ_K (N, 3, S, S); k, step, rho default to refiner.json's."""
        if x.ndim != 4 or x.shape[1:] != (3, self.size, self.size):
            raise RefinerError(f"refiner works on (N, 3, {self.size}, {self.size}) faces, got {tuple(x.shape)}")
        return refine_delta(x, delta0, self.step_session, self.embed_session,
                            self.default_steps if k is None else k,
                            self.step_size if step is None else step, self.rho_pixel if rho is None else rho)


class RefinedModel:
    """A MaskNet whose ``delta`` is refined: what face mode runs on each aligned crop. Everything else
    (``spec``, ``fixed_size``, ``run`` …) is the wrapped model's; ``seconds`` accumulates refinement time."""

    def __init__(self, model, refiner: Refiner, k: int, rho: float | None = None) -> None:
        size = model.fixed_size or model.spec.input_size
        if size != refiner.size:
            raise RefinerError(f"the MaskNet works at {size}² but the refiner at {refiner.size}²")
        self._model, self.refiner, self.k = model, refiner, k
        # the user's net sets the per-pixel budget: refined δ keeps its ρ_pixel unless told otherwise
        self.rho = rho if rho is not None else float(model.spec.rho_pixel)
        self.seconds = 0.0
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (x, δ): face.py may ask twice for one crop

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def delta(self, x: np.ndarray) -> np.ndarray:
        """x (N, 3, S, S) in [0, 1] -> refined δ (N, 3, S, S)."""
        if self._last is not None and np.array_equal(self._last[0], x):
            return self._last[1].copy()
        d0 = self._model.delta(x)  # (N, 3, S, S)
        t = time.perf_counter()
        d = self.refiner.refine(x, d0, self.k, rho=self.rho)
        self.seconds += time.perf_counter() - t
        self._last = (np.array(x, copy=True), d.copy())
        return d


def load_refiner(folder: str | Path, threads: int = 0, config: SessionConfig | None = None) -> Refiner:
    return Refiner(folder, config or SessionConfig(threads=threads))
