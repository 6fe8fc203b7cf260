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
from .splice import SINGLE_FILE, ByteTemplate, SplicedTemplate, assert_same, placeholder_id, sentinels


class OnnxTemplate(SplicedTemplate):
    """One spec's ONNX graph with per-user weights swapped in (fp32, fp16 or int8)."""

    format = "onnx"
    title = "ONNX"
    opset = OPSET
    seeds = range(0, 8, 2)

    def _build(self, seed: int) -> None:
        values, pid = sentinels(self.sentinel_shapes(), seed), placeholder_id(seed)
        self.template_bytes = self.serialize(values, pid)
        self.bytes = ByteTemplate.from_sentinels(self.template_bytes, {k: v.tobytes() for k, v in values.items()}, pid)
        self.files = {SINGLE_FILE: self.bytes}

    def serialize(self, stored: dict[str, np.ndarray], model_id: str) -> bytes:
        """The slow, reference path: build the protobuf and serialize it (also for odd-length ids)."""
        meta = {**self.metadata, PREFIX + "model_id": json.dumps(model_id)}
        return build_onnx_stored(self.spec, stored, self.shape, meta, self.precision).SerializeToString()

    def _serialize_files(self, stored: dict[str, np.ndarray], model_id: str) -> dict[str, bytes]:
        return {SINGLE_FILE: self.serialize(stored, model_id)}


def check_template(template: OnnxTemplate) -> None:
    """The format table's checker: splicing other values reproduces protobuf's own serialization."""
    other, oid = sentinels(template.sentinel_shapes(), template.seed + 1), placeholder_id(template.seed + 1)
    assert_same(template.bytes.render({k: v.tobytes() for k, v in other.items()}, oid),
                template.serialize(other, oid), f"{template.precision} ONNX template")


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
