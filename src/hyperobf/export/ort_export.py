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
from . import onnx_export
from .onnx_export import OnnxTemplate
from .onnx_graph import input_dims
from .splice import SINGLE_FILE, ByteTemplate, SplicedTemplate, placeholder_id, sentinels

# Constant folding would turn int8 DequantizeLinear(weight) into float32 weights in the file.
DISABLED_OPTIMIZERS = ["ConstantFolding"]


def onnx_to_ort(onnx_bytes: bytes) -> bytes:
    """Convert one ONNX model (bytes) to ORT format bytes with onnxruntime (basic optimisations)."""
    import onnxruntime as ort

    from ..device_runtime.session import SessionConfig, session_options

    with tempfile.TemporaryDirectory(prefix="hyperobf-ort-") as tmp:
        dst = Path(tmp) / "model.ort"
        opts = session_options(SessionConfig(optimization="basic"))
        opts.optimized_model_filepath = str(dst)
        opts.add_session_config_entry("session.save_model_format", "ORT")
        ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"],
                             disabled_optimizers=DISABLED_OPTIMIZERS)
        return dst.read_bytes()


class OrtTemplate(SplicedTemplate):
    """A spec's .ort file with per-user weights spliced in (same slots as the ONNX template)."""

    format = "ort"
    title = "ORT"
    seeds = range(10, 18, 2)

    def __init__(self, spec: MaskNetSpec, shape: str, metadata: dict[str, str], precision: str = "fp32") -> None:
        self.onnx = OnnxTemplate(spec, shape, metadata, precision)  # serializes the ONNX model of given weights
        super().__init__(spec, shape, metadata, precision)

    def _build(self, seed: int) -> None:
        values, pid = sentinels(self.sentinel_shapes(), seed), placeholder_id(seed)
        self.template_bytes = onnx_to_ort(self.onnx.serialize(values, pid))
        self.bytes = ByteTemplate.from_sentinels(self.template_bytes, {k: v.tobytes() for k, v in values.items()}, pid)
        self.files = {SINGLE_FILE: self.bytes}

    def _serialize_files(self, stored: dict[str, np.ndarray], model_id: str) -> dict[str, bytes]:
        return {SINGLE_FILE: onnx_to_ort(self.onnx.serialize(stored, model_id))}


def check_template(template: OrtTemplate) -> None:
    """The format table's checker: the inner ONNX template's own check, then a spliced .ort run by
    onnxruntime == the ONNX model of the same values (and the same model id).

    Not a byte comparison: onnxruntime writes some tables (metadata, kernel type strings)
    in hash-map order, so two conversions of one model need not be byte-identical.
    """
    from .verify import ort_outputs, ort_session

    onnx_export.check_template(template.onnx)
    values, model_id = sentinels(template.sentinel_shapes(), template.seed + 1), placeholder_id(template.seed + 1)
    # Both sides at the basic level, so they run the same kernels (same sums, same rounding).
    spliced = ort_session(template.bytes.render({k: v.tobytes() for k, v in values.items()}, model_id), basic=True)
    meta = spliced.get_modelmeta().custom_metadata_map
    if meta.get(PREFIX + "model_id") != json.dumps(model_id):
        raise RuntimeError(f"{template.precision} ORT template: model id not spliced correctly")
    x = np.random.default_rng(0).random((1, *input_dims(template.spec, "fixed")[1:]), dtype=np.float32)
    got = ort_outputs(spliced, x)
    want = ort_outputs(ort_session(template.onnx.serialize(values, model_id), basic=True), x)
    for g, w in zip(got, want):
        if np.abs(g - w).max() > 1e-6 * max(1.0, float(np.abs(w).max())):
            raise RuntimeError(f"{template.precision} ORT template: spliced weights do not reproduce the ONNX model")
