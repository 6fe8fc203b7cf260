"""Build the MaskNet ONNX graph straight from the spec (no tracing), so the graph and the
spec cannot drift apart. Per user only the initializers change.

Graph: image (N,3,H,W) -> [Resize] -> Conv -> Relu ... -> Conv -> Tanh -> Mul(ρ_pixel) = delta
       protected = Clip(image + delta, 0, 1)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..model_meta import INPUT_NAME, OUTPUT_NAMES
from ..spec import MaskNetSpec

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.14 (mobile builds included)


def build_onnx(spec: MaskNetSpec, params: dict[str, np.ndarray], shape: str = "fixed",
               metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """One user's MaskNet as an ONNX model. params: {name: array of the spec's shape}."""
    if shape == "fixed":
        dims: list = [1, 3, spec.input_size, spec.input_size]
    elif shape == "dynamic":
        dims = ["N", 3, "H", "W"]
    else:
        raise ValueError(f"shape must be 'fixed' or 'dynamic', got {shape!r}")
    nodes, inits = [], []
    h = INPUT_NAME
    for layer in spec.layers:
        if layer.upsample > 1:
            scales = f"{layer.name}.scales"
            inits.append(numpy_helper.from_array(np.array([1, 1, layer.upsample, layer.upsample], np.float32), scales))
            nodes.append(helper.make_node("Resize", [h, "", scales], [f"{layer.name}.up"], mode="nearest",
                                          coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
            h = f"{layer.name}.up"
        w, b = f"{layer.name}.weight", f"{layer.name}.bias"
        for name in (w, b):
            arr = np.ascontiguousarray(params[name], dtype=np.float32)
            if arr.shape != spec.param_shapes()[name]:
                raise ValueError(f"{name}: shape {arr.shape} != spec {spec.param_shapes()[name]}")
            inits.append(numpy_helper.from_array(arr, name))
        p = layer.padding
        nodes.append(helper.make_node("Conv", [h, w, b], [f"{layer.name}.out"], kernel_shape=[layer.kernel] * 2,
                                      strides=[layer.stride] * 2, pads=[p, p, p, p]))
        h = f"{layer.name}.out"
        if layer.act == "relu":
            nodes.append(helper.make_node("Relu", [h], [f"{layer.name}.relu"]))
            h = f"{layer.name}.relu"
    inits += [numpy_helper.from_array(np.array(spec.rho_pixel, np.float32), "rho_pixel"),
              numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    protected, delta = OUTPUT_NAMES
    nodes += [
        helper.make_node("Tanh", [h], ["tanh"]),
        helper.make_node("Mul", ["tanh", "rho_pixel"], [delta]),
        helper.make_node("Add", [INPUT_NAME, delta], ["sum"]),
        helper.make_node("Clip", ["sum", "zero", "one"], [protected]),
    ]
    graph = helper.make_graph(
        nodes, f"masknet_{spec.name}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(protected, TensorProto.FLOAT, dims),
         helper.make_tensor_value_info(delta, TensorProto.FLOAT, dims)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hyperobf")
    model.ir_version = IR_VERSION
    if metadata:
        helper.set_model_props(model, metadata)
    return model
