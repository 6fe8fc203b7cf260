"""onnxruntime's mobile usability checker, run once per ONNX template.

Same steps as ``python -m onnxruntime.tools.check_onnx_model_mobile_usability``: optimise to
the basic level, infer shapes, then estimate how the NNAPI and CoreML execution providers
would partition the graph. Its overall verdict ("NNAPI or CoreML may work well") must be
positive for the fixed-shape variant; per-EP details go into the report.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

EPS = {
    "nnapi": None,
    "coreml_mlprogram": "coreml_supported_mlprogram_ops.md",
    "coreml_neuralnetwork": "coreml_supported_neuralnetwork_ops.md",
}


def mobile_usability(onnx_bytes: bytes) -> dict:
    """{"verdict": bool, ep: {suitability, supported, nodes, partitions, unsupported_ops}}."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    logger = logging.getLogger("hyperobf.mobile_usability")
    logger.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="hyperobf-mobile-") as tmp:
        src, opt = Path(tmp) / "model.onnx", Path(tmp) / "model.basic.onnx"
        src.write_bytes(onnx_bytes)
        verdict = bool(uc.analyze_model(src, skip_optimize=False, logger=logger))
        optimize_model(src, opt, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(opt).model_with_shape_info
        out: dict = {"verdict": verdict}
        for ep, table in EPS.items():
            info = (uc.check_nnapi_partitions(model, True) if table is None
                    else uc.check_coreml_partitions(model, True, table))
            out[ep] = {"suitability": info.suitability().name, "supported_nodes": info.num_supported_nodes,
                       "nodes": info.num_nodes, "partitions": info.num_partitions,
                       "unsupported_ops": sorted(info.unsupported_ops)}
    return out


def verify_onnx_template(template, shape: str) -> dict:  # noqa: ANN001 - an OnnxTemplate
    """The ONNX row's once-per-export check: onnx.checker (full) on the template and onnxruntime's
    mobile usability checker, whose verdict must be positive for the fixed-shape variant."""
    import onnx

    from .errors import ReferenceMismatch

    onnx.checker.check_model(onnx.load_from_string(template.template_bytes), full_check=True)
    usability = mobile_usability(template.template_bytes)
    if shape == "fixed" and not usability["verdict"]:
        raise ReferenceMismatch(f"onnx {template.precision}: onnxruntime's mobile usability checker rejects the "
                                f"fixed-shape model ({usability})")
    return {"opset": template.opset, "mobile_usability": usability}
