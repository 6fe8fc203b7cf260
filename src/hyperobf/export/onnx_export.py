"""ONNX export and verification of per-user MaskNets.

The graph is built once per (spec, shape); per user only initializer bytes and the
model id change (``OnnxTemplate.render``), which is what makes 10^4 files take seconds.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..model_meta import INPUT_NAME, PREFIX
from ..spec import MaskNetSpec
from .onnx_graph import build_onnx


class OnnxTemplate:
    """One spec's ONNX graph with per-user weights swapped in."""

    def __init__(self, spec: MaskNetSpec, shape: str, metadata: dict[str, str]) -> None:
        self.spec = spec
        zeros = {k: np.zeros(s, np.float32) for k, s in spec.param_shapes().items()}
        self.model = build_onnx(spec, zeros, shape, metadata)
        self._inits = {t.name: t for t in self.model.graph.initializer}
        self._props = {p.key: p for p in self.model.metadata_props}

    def render(self, params: dict[str, np.ndarray], model_id: str) -> bytes:
        """Serialized ONNX bytes for one user. params: {name: float32 array of spec shape}."""
        for name in self.spec.param_shapes():
            self._inits[name].raw_data = np.ascontiguousarray(params[name], np.float32).tobytes()
        self._props[PREFIX + "model_id"].value = f'"{model_id}"'
        return self.model.SerializeToString()


def verify_onnx(data: bytes, spec: MaskNetSpec, params: dict[str, np.ndarray], inputs: np.ndarray,
                tol: float = 1e-5, full_check: bool = True) -> float:
    """onnx.checker + onnxruntime vs the torch MaskNet on ``inputs`` (B,3,H,W); returns max |diff|.

    Raises AssertionError when outputs differ by more than ``tol``.
    """
    import onnxruntime as ort
    import torch

    from ..models.masknet import MaskNet

    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=full_check)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    net = MaskNet(spec)
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in params.items()})
    worst = 0.0
    fixed = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    for x in inputs:
        batch = x[None] if fixed else x[None]
        out, delta = sess.run(None, {INPUT_NAME: batch.astype(np.float32)})
        with torch.no_grad():
            t = torch.from_numpy(batch.astype(np.float32))
            ref_d = net.delta(t).numpy()
            ref = net(t).numpy()
        worst = max(worst, float(np.abs(out - ref).max()), float(np.abs(delta - ref_d).max()))
    if worst > tol:
        raise AssertionError(f"onnxruntime output differs from torch by {worst:.3g} (> {tol:g})")
    return worst
