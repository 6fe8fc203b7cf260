"""Test helpers for the training tests: a tiny ONNX face "embedder" built op by op, tiny configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_embedder(path: Path, size: int = 32, dim: int = 16, seed: int = 0) -> Path:
    """A random ONNX embedder exercising the converter's ops: Conv, BatchNormalization, PRelu,
    Relu, Clip, Add, Mul, Sub, Div, GlobalAveragePool, Flatten, Gemm, MatMul, Reshape, Constant,
    MaxPool, Shape/Gather/Unsqueeze/Concat. Input (1, 3, size, size), output (1, dim)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name, shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        init("w1", (8, 3, 3, 3)), init("b1", (8,)),
        numpy_helper.from_array((1 + 0.1 * rng.standard_normal(8)).astype(np.float32), "bn_s"),
        init("bn_b", (8,), 0.1), init("bn_m", (8,), 0.1),
        numpy_helper.from_array((0.5 + rng.random(8)).astype(np.float32), "bn_v"),
        numpy_helper.from_array(np.full((8, 1, 1), 0.2, np.float32), "slope"),
        init("wdw", (8, 1, 3, 3)), init("w2", (8, 8, 1, 1)),
        init("wg", (dim, 8)), init("bg", (dim,)), init("wm", (dim, dim)),
        numpy_helper.from_array(np.array([1, -1], np.int64), "shape_1m1"),
    ]
    nodes = [
        helper.make_node("Constant", [], ["c_lo"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
        helper.make_node("Constant", [], ["c_hi"], value=numpy_helper.from_array(np.array(6.0, np.float32))),
        helper.make_node("Constant", [], ["c_half"], value_float=0.5),
        helper.make_node("Conv", ["input", "w1", "b1"], ["h1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["h1", "bn_s", "bn_b", "bn_m", "bn_v"], ["h2"], epsilon=1e-5),
        helper.make_node("PRelu", ["h2", "slope"], ["h3"]),
        helper.make_node("Conv", ["h3", "wdw"], ["h4"], kernel_shape=[3, 3], group=8, pads=[0, 0, 2, 2]),
        helper.make_node("Clip", ["h4", "c_lo", "c_hi"], ["h5"]),
        helper.make_node("Conv", ["h5", "w2"], ["h6"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["h6"], ["h7"]),
        helper.make_node("Add", ["h7", "h3"], ["h8"]),
        helper.make_node("Mul", ["h8", "c_half"], ["h9"]),
        helper.make_node("Sub", ["h9", "c_half"], ["h9b"]),
        helper.make_node("Div", ["h9b", "c_hi"], ["h9c"]),
        helper.make_node("MaxPool", ["h9c"], ["h9d"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["h9d"], ["h10"]),
        helper.make_node("Shape", ["h10"], ["s"]),
        helper.make_node("Constant", [], ["i0"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        helper.make_node("Constant", [], ["ax0"], value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["b1d"]),
        helper.make_node("Constant", [], ["m1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["b1d", "m1"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["h10", "flat_shape"], ["h11"]),
        helper.make_node("Flatten", ["h11"], ["h12"], axis=1),
        helper.make_node("Gemm", ["h12", "wg", "bg"], ["h13"], transB=1),
        helper.make_node("MatMul", ["h13", "wm"], ["h14"]),
        helper.make_node("Reshape", ["h14", "shape_1m1"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_embedder",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_cfg(**kw):
    """A seconds-scale TrainConfig on the tiny spec and the embedded synthetic faces."""
    from hyperobf.train.config import TrainConfig

    base = dict(structure="tiny", image_size=48, epochs=1, steps_per_epoch=2, batch_images=4, nets_per_step=2,
                eval_images=8, eval_nets=2, ensemble_size=3)
    base.update(kw)
    return TrainConfig(**base)
