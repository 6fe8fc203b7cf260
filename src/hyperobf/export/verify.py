"""Verification of exported models against the torch MaskNet (the fp32 reference).

* fp32 files: every output within ``FP32_TOL`` (1e-5) of torch, on random and face inputs.
* reduced precisions (fp16, int8) are judged on δ (the ``delta`` output), not only on the
  protected image: ``max|δ_variant − δ_fp32| / max|δ_fp32|`` per image, worst over images and
  users, must stay ≤ ``DELTA_TOL`` (5%) or the export is refused. DSSIM on faces is reported
  against the fp32 result and against the clean face.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..model_meta import INPUT_NAME
from ..spec import MaskNetSpec
from .errors import ExportRefused, ReferenceMismatch

FP32_TOL = 1e-5
DELTA_TOL = 0.05


@dataclass
class VerifyInputs:
    """Images the exported models are run on: (B, 3, H, W) float32 in [0, 1] per group."""

    groups: dict[str, np.ndarray]  # "random", "random_WxH" (dynamic), "faces"
    faces_source: str  # "glint24 (real, 4 images)" / "synthetic (embedded)"

    @property
    def faces(self) -> np.ndarray:
        return self.groups["faces"]


def make_inputs(spec: MaskNetSpec, shape: str, faces_dir: str | Path | None = None, n_faces: int = 2,
                seed: int = 0, n_random: int = 1) -> VerifyInputs:
    """Random inputs (plus a non-square size for dynamic models) and faces at the working size.

    Faces come from ``faces_dir`` (ImageFolder, real faces) when given, else from the embedded
    synthetic set; the report says which.
    """
    from ..train.data import load_image_folder, synthetic_faces

    rng = np.random.default_rng(seed)
    s = spec.input_size
    groups = {"random": rng.random((n_random, 3, s, s), dtype=np.float32)}
    if shape == "dynamic":
        m = spec.stride_product
        h, w = max(m, (s // 2) // m * m), max(m, (s + s // 2) // m * m)
        groups[f"random_{w}x{h}"] = rng.random((1, 3, h, w), dtype=np.float32)
    if faces_dir:
        fs = load_image_folder(faces_dir, size=s, max_identities=n_faces, max_per_identity=1)
        source = f"{Path(faces_dir).name} (real, {len(fs)} images)"
    else:
        fs = synthetic_faces(n_identities=n_faces, per_identity=1, size=s, seed=seed)
        source = f"synthetic (embedded, {len(fs)} images; pass --verify-faces DIR for real faces)"
    groups["faces"] = fs.float().numpy()
    return VerifyInputs(groups, source)


def torch_reference(spec: MaskNetSpec, params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fp32 torch MaskNets of k users on the same images: x (B,3,H,W) -> (protected, δ), each (k,B,3,H,W)."""
    from ..models.masknet import outputs_from_numpy

    return outputs_from_numpy(spec, params, x)


def ort_session(data: bytes, basic: bool = False):  # noqa: ANN201 - an onnxruntime.InferenceSession
    """An onnxruntime CPU session on model bytes (ONNX or ORT format); ``basic``: basic optimisations only.
    One thread, no spin-waiting: verification runs beside generation and the writer threads."""
    from ..device_runtime.session import SessionConfig, make_session

    return make_session(data, SessionConfig(threads=1, optimization="basic" if basic else "all", spinning=False))


def ort_outputs(data_or_session, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run an ONNX/ORT model (bytes or session) image by image: x (B,3,H,W) -> (protected, δ)."""
    sess = ort_session(data_or_session) if isinstance(data_or_session, (bytes, bytearray)) else data_or_session
    outs = [sess.run(None, {INPUT_NAME: x[i:i + 1].astype(np.float32)}) for i in range(len(x))]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def delta_ratio(delta: np.ndarray, ref: np.ndarray) -> float:
    """Worst per-image max|δ − δ_ref| / max|δ_ref|; δ: (B, 3, H, W)."""
    num = np.abs(delta - ref).reshape(len(ref), -1).max(1)
    den = np.maximum(np.abs(ref).reshape(len(ref), -1).max(1), 1e-12)
    return float((num / den).max())


def dssim_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image DSSIM (hyperobf.train.losses.dssim) of (B,3,H,W) arrays in [0, 1]."""
    import torch

    from ..train.losses import dssim

    with torch.no_grad():
        return dssim(torch.from_numpy(np.array(a, np.float32)), torch.from_numpy(np.array(b, np.float32))).numpy()


class Reference:
    """fp32 torch outputs of k users, computed on first use and shared by all formats.

    ``ref[group]`` -> (protected, δ), each (k, B, 3, H, W); ``ref["dssim_fp32_vs_clean"]`` -> (k,)
    (only with ``dssim``: the baseline for reduced precisions' DSSIM).
    """

    def __init__(self, spec: MaskNetSpec, params: dict[str, np.ndarray], inputs: VerifyInputs, dssim: bool = True) -> None:
        self.spec, self.params, self.inputs, self.dssim = spec, params, inputs, dssim
        self._cache: dict | None = None

    def _compute(self) -> dict:
        if self._cache is None:
            refs = {name: torch_reference(self.spec, self.params, x) for name, x in self.inputs.groups.items()}
            if self.dssim and "faces" in self.inputs.groups:
                x, out = self.inputs.faces, refs["faces"][0]  # (B,3,H,W), (k,B,3,H,W)
                flat = out.reshape(-1, *x.shape[1:])
                d = dssim_np(flat, np.broadcast_to(x, out.shape).reshape(flat.shape))
                refs["dssim_fp32_vs_clean"] = d.reshape(len(out), -1).max(1)
            self._cache = refs
        return self._cache

    def __getitem__(self, key: str):
        return self._compute()[key]

    def __contains__(self, key: str) -> bool:
        if key == "dssim_fp32_vs_clean":
            return self.dssim and "faces" in self.inputs.groups
        return key in self.inputs.groups


Refs = Reference


def reference(spec: MaskNetSpec, params: dict[str, np.ndarray], inputs: VerifyInputs, dssim: bool = True) -> Reference:
    """The (lazy) fp32 torch reference of k users: see :class:`Reference`."""
    return Reference(spec, params, inputs, dssim)


class Tally:
    """Accumulates per-user comparisons into one report row for a (format, precision) job.

    DSSIM is computed for reduced precisions only: an fp32 file already matches torch within
    1e-5 per pixel, so its DSSIM vs fp32 is 0 to float precision and would only cost time.
    """

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.users = 0
        self.max_abs_diff = 0.0  # vs torch fp32, both outputs
        self.delta_ratio = 0.0
        self.dssim_vs_fp32: float | None = None  # protected faces: variant vs fp32
        self.dssim_vs_clean: float | None = None  # protected faces vs clean faces (imperceptibility)
        self.dssim_fp32_vs_clean: float | None = None

    def add(self, name: str, x: np.ndarray, out: np.ndarray, delta: np.ndarray,
            ref_out: np.ndarray, ref_delta: np.ndarray) -> None:
        self.max_abs_diff = max(self.max_abs_diff, float(np.abs(out - ref_out).max()),
                                float(np.abs(delta - ref_delta).max()))
        self.delta_ratio = max(self.delta_ratio, delta_ratio(delta, ref_delta))
        if name == "faces" and self.precision != "fp32":  # one batched call: [variant vs fp32, variant vs clean]
            b = len(x)
            d = dssim_np(np.concatenate([out, out]), np.concatenate([ref_out, x]))
            self.dssim_vs_fp32 = max(self.dssim_vs_fp32 or 0.0, float(d[:b].max()))
            self.dssim_vs_clean = max(self.dssim_vs_clean or 0.0, float(d[b:].max()))

    def add_reference(self, refs: Refs, i: int) -> None:
        if "dssim_fp32_vs_clean" in refs:
            self.dssim_fp32_vs_clean = max(self.dssim_fp32_vs_clean or 0.0, float(refs["dssim_fp32_vs_clean"][i]))

    def check(self, label: str, user: str) -> None:
        """fp32 must match torch within FP32_TOL; every precision must keep δ within DELTA_TOL."""
        if self.precision == "fp32" and self.max_abs_diff > FP32_TOL:
            raise ReferenceMismatch(f"{label}: {user} differs from torch by {self.max_abs_diff:.3g} (> {FP32_TOL:g})")
        if self.delta_ratio > DELTA_TOL:
            raise ExportRefused(f"{label}: δ changes by {self.delta_ratio:.1%} vs fp32 for {user} "
                                f"(> {DELTA_TOL:.0%}); refusing to emit this variant")

    def row(self) -> dict:
        out = {"users_checked": self.users, "max_abs_diff": self.max_abs_diff, "delta_rel_err": self.delta_ratio}
        for key in ("dssim_vs_fp32", "dssim_vs_clean", "dssim_fp32_vs_clean"):
            if getattr(self, key) is not None:
                out[key + ("_max" if "clean" in key else "")] = getattr(self, key)
        return out


def _verify_with_onnxruntime(template, paths: list[Path], params: dict[str, np.ndarray], inputs: VerifyInputs,
                             label: str, refs: Refs | None, file_check: Callable[[bytes], None] | None,
                             checker: str) -> dict:
    """Run every file in onnxruntime against the torch reference (after ``file_check`` of its bytes);
    ``checker`` names the structure check in the report."""
    tally = Tally(template.precision)
    refs = refs if refs is not None else reference(template.spec, params, inputs)
    for i, path in enumerate(paths):
        data = path.read_bytes()
        if file_check is not None:
            file_check(data)
        sess = ort_session(data)
        for name, x in inputs.groups.items():
            out, delta = ort_outputs(sess, x)
            tally.add(name, x, out, delta, refs[name][0][i], refs[name][1][i])
        tally.add_reference(refs, i)
        tally.users += 1
        tally.check(label, path.name)
    return {**tally.row(), "checker": checker, "runtime": "onnxruntime CPU", "faces": inputs.faces_source}


def _onnx_checker(data: bytes) -> None:
    import onnx

    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)


def verify_onnx_files(template, paths: list[Path], params: dict[str, np.ndarray], inputs: VerifyInputs,
                      label: str, refs: Refs | None = None) -> dict:
    """.onnx files: onnx.checker (full), then onnxruntime vs torch.
    params: the users' generated fp32 weights {name: (k, *shape)}, in the order of ``paths``."""
    return _verify_with_onnxruntime(template, paths, params, inputs, label, refs, _onnx_checker,
                                    "onnx.checker full_check")


def verify_ort_files(template, paths: list[Path], params: dict[str, np.ndarray], inputs: VerifyInputs,
                     label: str, refs: Refs | None = None) -> dict:
    """.ort files: loading the flatbuffer is the structure check, then onnxruntime vs torch."""
    return _verify_with_onnxruntime(template, paths, params, inputs, label, refs, None, "ORT flatbuffer load")
