"""ONNX templates of per-user MaskNets.

The graph is built once per (spec, shape, precision); per user only initializer bytes and the
model id change (``OnnxTemplate.render`` / ``render_batch``, byte splicing checked against
protobuf's own serialization), which is what makes 10^4 files take about a second.
"""

from __future__ import annotations

import json

import numpy as np

from ..model_meta import PREFIX
from ..spec import MaskNetSpec
from .onnx_graph import OPSET, build_onnx_stored
from .precision import Slot, encode, slots
from .splice import MODEL_ID_LEN, ByteTemplate, assert_same, placeholder_id, sentinels

SINGLE_FILE = ""  # render_batch key of a single-file format's only file


class OnnxTemplate:
    """One spec's ONNX graph with per-user weights swapped in (fp32, fp16 or int8)."""

    format = "onnx"
    opset = OPSET

    def __init__(self, spec: MaskNetSpec, shape: str, metadata: dict[str, str], precision: str = "fp32") -> None:
        self.spec = spec
        self.shape = shape
        self.precision = precision
        self.slots: list[Slot] = slots(spec, precision)
        self.metadata = dict(metadata)
        last: Exception | None = None
        for seed in range(0, 8, 2):  # a sentinel colliding with other bytes is astronomically rare; retry anyway
            try:
                self._build(seed)
                return
            except LookupError as e:
                last = e
        raise RuntimeError(f"cannot build the {precision} ONNX template: {last}")

    def _shapes(self) -> dict:
        return {s.name: (s.shape, s.dtype) for s in self.slots}

    def _build(self, seed: int) -> None:
        values, pid = sentinels(self._shapes(), seed), placeholder_id(seed)
        self.template_bytes = self.serialize(values, pid)
        self.bytes = ByteTemplate.from_sentinels(self.template_bytes, {k: v.tobytes() for k, v in values.items()}, pid)
        other, oid = sentinels(self._shapes(), seed + 1), placeholder_id(seed + 1)
        assert_same(self.bytes.render({k: v.tobytes() for k, v in other.items()}, oid),
                    self.serialize(other, oid), f"{self.precision} ONNX template")

    def serialize(self, stored: dict[str, np.ndarray], model_id: str) -> bytes:
        """The slow, reference path: build the protobuf and serialize it (also for odd-length ids)."""
        meta = {**self.metadata, PREFIX + "model_id": json.dumps(model_id)}
        return build_onnx_stored(self.spec, stored, self.shape, meta, self.precision).SerializeToString()

    # --- per user ------------------------------------------------------------------
    def encode(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{param: (n, *shape) float32} -> {slot: (n, ...)} stored tensors of this precision."""
        return encode(self.spec, self.precision, params)

    def render(self, params: dict[str, np.ndarray], model_id: str) -> bytes:
        """Serialized ONNX bytes for one user. params: {name: float32 array of spec shape}."""
        stored = {k: v[0] for k, v in self.encode({k: np.asarray(v)[None] for k, v in params.items()}).items()}
        if len(model_id) != MODEL_ID_LEN or not model_id.isascii():
            return self.serialize(stored, model_id)
        return self.bytes.render({k: np.ascontiguousarray(v).tobytes() for k, v in stored.items()}, model_id)

    def render_batch(self, stored: dict[str, np.ndarray], model_ids: list[str],
                     out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """{SINGLE_FILE: (n, file bytes) uint8} for n users' encoded tensors (see :meth:`encode`)."""
        return {SINGLE_FILE: self.bytes.render_batch(stored, model_ids, (out or {}).get(SINGLE_FILE))}


def verify_onnx(data: bytes, spec: MaskNetSpec, params: dict[str, np.ndarray], inputs: np.ndarray,
                tol: float = 1e-5, full_check: bool = True) -> float:
    """onnx.checker + onnxruntime vs the torch MaskNet on ``inputs`` (B,3,H,W); returns max |diff|.

    Raises AssertionError when outputs differ by more than ``tol``. (Kept for callers of the
    single-model API; the exporter uses :mod:`hyperobf.export.verify`.)
    """
    import onnx

    from .verify import ort_outputs, torch_reference

    onnx.checker.check_model(onnx.load_from_string(data), full_check=full_check)
    out, delta = ort_outputs(data, inputs)
    ref_out, ref_delta = torch_reference(spec, {k: np.asarray(v)[None] for k, v in params.items()}, inputs)
    worst = max(float(np.abs(out - ref_out[0]).max()), float(np.abs(delta - ref_delta[0]).max()))
    if worst > tol:
        raise AssertionError(f"onnxruntime output differs from torch by {worst:.3g} (> {tol:g})")
    return worst
