"""ORT-format (.ort) templates for onnxruntime mobile.

The ONNX template is converted once with onnxruntime itself (as
``onnxruntime.tools.convert_onnx_models_to_ort`` does: a session with
``session.save_model_format=ORT`` and ``optimized_model_filepath``), at the *basic*
optimisation level — EP-independent rewrites only, so the file runs with the CPU, NNAPI or
CoreML execution providers. Initializers keep their bytes in the flatbuffer, so per user the
same sentinel regions are spliced; the template checks itself by running a spliced model
against the ONNX model of the same weights.

Note on fp16: the conversion runs the CPU execution provider's graph partitioning, and on an
x86 host without fp16 Conv kernels onnxruntime inserts Casts around the fp16 nodes, which are
saved into the .ort. So an fp16 .ort made here stores fp16 weights but computes in fp32 (its
δ is verified as such); the fp16 .onnx keeps the fp16 graph for EPs that run it natively.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..model_meta import PREFIX
from ..spec import MaskNetSpec
from .onnx_export import SINGLE_FILE, OnnxTemplate
from .onnx_graph import input_dims
from .splice import ByteTemplate, placeholder_id, sentinels

# Constant folding would turn int8 DequantizeLinear(weight) into float32 weights in the file.
DISABLED_OPTIMIZERS = ["ConstantFolding"]


def onnx_to_ort(onnx_bytes: bytes) -> bytes:
    """Convert one ONNX model (bytes) to ORT format bytes with onnxruntime (basic optimisations)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="hyperobf-ort-") as tmp:
        dst = Path(tmp) / "model.ort"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(dst)
        opts.add_session_config_entry("session.save_model_format", "ORT")
        ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"],
                             disabled_optimizers=DISABLED_OPTIMIZERS)
        return dst.read_bytes()


class OrtTemplate:
    """A spec's .ort file with per-user weights spliced in (same slots as the ONNX template)."""

    format = "ort"

    def __init__(self, spec: MaskNetSpec, shape: str, metadata: dict[str, str], precision: str = "fp32") -> None:
        self.onnx = OnnxTemplate(spec, shape, metadata, precision)
        self.spec, self.shape, self.precision = spec, shape, precision
        self.slots = self.onnx.slots
        shapes = {s.name: (s.shape, s.dtype) for s in self.slots}
        last: Exception | None = None
        for seed in range(10, 18, 2):
            try:
                values, pid = sentinels(shapes, seed), placeholder_id(seed)
                self.template_bytes = onnx_to_ort(self.onnx.serialize(values, pid))
                self.bytes = ByteTemplate.from_sentinels(self.template_bytes, {k: v.tobytes() for k, v in values.items()}, pid)
                break
            except LookupError as e:
                last = e
        else:
            raise RuntimeError(f"cannot build the {precision} ORT template: {last}")
        self._self_check(sentinels(shapes, seed + 1), placeholder_id(seed + 1))

    def _self_check(self, values: dict[str, np.ndarray], model_id: str) -> None:
        """Spliced .ort == the ONNX model of the same values, run by onnxruntime (and same model id).

        Not a byte comparison: onnxruntime writes some tables (metadata, kernel type strings)
        in hash-map order, so two conversions of one model need not be byte-identical.
        """
        from .verify import ort_outputs, ort_session

        # Both sides at the basic level, so they run the same kernels (same sums, same rounding).
        spliced = ort_session(self.bytes.render({k: v.tobytes() for k, v in values.items()}, model_id), basic=True)
        meta = spliced.get_modelmeta().custom_metadata_map
        if meta.get(PREFIX + "model_id") != json.dumps(model_id):
            raise RuntimeError(f"{self.precision} ORT template: model id not spliced correctly")
        x = np.random.default_rng(0).random((1, *input_dims(self.spec, "fixed")[1:]), dtype=np.float32)
        got = ort_outputs(spliced, x)
        want = ort_outputs(ort_session(self.onnx.serialize(values, model_id), basic=True), x)
        for g, w in zip(got, want):
            if np.abs(g - w).max() > 1e-6 * max(1.0, float(np.abs(w).max())):
                raise RuntimeError(f"{self.precision} ORT template: spliced weights do not reproduce the ONNX model")

    def encode(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.onnx.encode(params)

    def render(self, params: dict[str, np.ndarray], model_id: str) -> bytes:
        """One user's .ort bytes (converted through onnxruntime when the id is not the standard length)."""
        stored = {k: v[0] for k, v in self.encode({k: np.asarray(v)[None] for k, v in params.items()}).items()}
        try:
            return self.bytes.render({k: np.ascontiguousarray(v).tobytes() for k, v in stored.items()}, model_id)
        except ValueError:
            return onnx_to_ort(self.onnx.serialize(stored, model_id))

    def render_batch(self, stored: dict[str, np.ndarray], model_ids: list[str],
                     out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        return {SINGLE_FILE: self.bytes.render_batch(stored, model_ids, (out or {}).get(SINGLE_FILE))}
