"""Build the MaskNet ONNX graph straight from the spec (no tracing), so the graph and the
spec cannot drift apart. Per user only the initializers change.

Graph (fp32): image (N,3,H,W) -> [Resize] -> [Concat(skip)] -> Conv -> Relu ... -> Conv -> Tanh -> Mul(ρ_pixel) = delta
              protected = Clip(image + delta, 0, 1)
A layer with a skip input (``concat``) concatenates the named earlier layer's (activated) output
after its own input on the channel axis (Concat axis=1), as models.masknet does.
fp16: image is cast to float16, the conv chain runs on float16 weights, delta is cast back to
      float32 and protected is formed in float32 (inputs and outputs stay float32).
int8: each conv weight is int8 + per-output-channel scale, DequantizeLinear(axis=0) -> Conv;
      activations stay float32 (weight-only quantisation).

The fp16 graph is built here rather than by onnxconverter-common's convert_float_to_float16
(keep_io_types=True): on this graph, whose output ``delta`` also feeds ``Add``, the converter
(1.16) emits Add(float16 image, float32 delta), which onnx.checker and onnxruntime reject.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..model_meta import INPUT_NAME, OUTPUT_NAMES
from ..spec import MaskNetSpec
from .precision import encode, slots

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.14 (mobile builds included)


def input_dims(spec: MaskNetSpec, shape: str) -> list:
    if shape == "fixed":
        return [1, spec.in_channels, spec.input_size, spec.input_size]
    if shape == "dynamic":
        return ["N", spec.in_channels, "H", "W"]
    raise ValueError(f"shape must be 'fixed' or 'dynamic', got {shape!r}")


def build_onnx(spec: MaskNetSpec, params: dict[str, np.ndarray], shape: str = "fixed",
               metadata: dict[str, str] | None = None, precision: str = "fp32") -> onnx.ModelProto:
    """One user's MaskNet as an ONNX model. params: {name: float32 array of the spec's shape}."""
    for name, want in spec.param_shapes().items():
        if np.shape(params[name]) != want:
            raise ValueError(f"{name}: shape {np.shape(params[name])} != spec {want}")
    stored = {k: v[0] for k, v in encode(spec, precision, {k: np.asarray(v)[None] for k, v in params.items()}).items()}
    return build_onnx_stored(spec, stored, shape, metadata, precision)


def build_onnx_stored(spec: MaskNetSpec, stored: dict[str, np.ndarray], shape: str = "fixed",
                      metadata: dict[str, str] | None = None, precision: str = "fp32") -> onnx.ModelProto:
    """Like :func:`build_onnx` from already encoded tensors ({slot name: array}, see precision.slots)."""
    dims = input_dims(spec, shape)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def node(op: str, ins: list[str], outs: list[str], **attrs) -> None:
        nodes.append(helper.make_node(op, ins, outs, name=f"{outs[0]}/{op}", **attrs))

    for s in slots(spec, precision):
        arr = np.ascontiguousarray(stored[s.name], s.dtype)
        if arr.shape != s.shape:
            raise ValueError(f"{s.name}: shape {arr.shape} != {s.shape}")
        inits.append(numpy_helper.from_array(arr, s.name))

    h = INPUT_NAME
    if precision == "fp16":
        node("Cast", [h], ["image_fp16"], to=TensorProto.FLOAT16)
        h = "image_fp16"
    outputs: dict[str, str] = {}  # layer name -> graph name of its (activated) output, for skips
    for layer in spec.layers:
        if layer.upsample > 1:
            scales = f"{layer.name}.scales"  # Resize scales are float32 whatever the data type
            inits.append(numpy_helper.from_array(np.array([1, 1, layer.upsample, layer.upsample], np.float32), scales))
            # An empty roi tensor instead of a missing input: onnxruntime's mobile usability
            # checker counts a missing ("") input as a dynamic shape and rejects the node.
            if not any(i.name == "roi" for i in inits):
                inits.append(numpy_helper.from_array(np.zeros(0, np.float32), "roi"))
            node("Resize", [h, "roi", scales], [f"{layer.name}.up"], mode="nearest",
                 coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            h = f"{layer.name}.up"
        if layer.concat:
            node("Concat", [h, outputs[layer.concat]], [f"{layer.name}.cat"], axis=1)  # (N, in_ch, h, w)
            h = f"{layer.name}.cat"
        w, b = f"{layer.name}.weight", f"{layer.name}.bias"
        if precision == "int8":
            inits.append(numpy_helper.from_array(np.zeros(layer.out_ch, np.int8), f"{w}_zp"))
            node("DequantizeLinear", [f"{w}_q", f"{w}_scale", f"{w}_zp"], [w], axis=0)
        p = layer.padding
        node("Conv", [h, w, b], [f"{layer.name}.out"], kernel_shape=[layer.kernel] * 2,
             strides=[layer.stride] * 2, pads=[p, p, p, p])
        h = f"{layer.name}.out"
        if layer.act == "relu":
            node("Relu", [h], [f"{layer.name}.relu"])
            h = f"{layer.name}.relu"
        outputs[layer.name] = h
    np_fdt = np.float16 if precision == "fp16" else np.float32
    inits += [numpy_helper.from_array(np.array(spec.rho_pixel, np_fdt), "rho_pixel"),
              numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    protected, delta = OUTPUT_NAMES
    node("Tanh", [h], ["tanh"])
    if precision == "fp16":
        node("Mul", ["tanh", "rho_pixel"], ["delta_fp16"])
        node("Cast", ["delta_fp16"], [delta], to=TensorProto.FLOAT)
    else:
        node("Mul", ["tanh", "rho_pixel"], [delta])
    node("Add", [INPUT_NAME, delta], ["sum"])
    node("Clip", ["sum", "zero", "one"], [protected])
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
