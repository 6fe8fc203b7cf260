"""A small ONNX -> torch converter for frozen face embedders (the feature objective's Φ).

Interprets an ONNX graph node by node with torch ops. It covers the ops common in face
embedders (Conv, BatchNormalization, PRelu, Relu, Clip, Add/Sub/Mul/Div, Flatten, Reshape, Gemm,
MatMul, GlobalAveragePool, Constant, plus the Shape/Gather/Unsqueeze/Concat chain that torch
exports for ``x.view(x.size(0), -1)``). Weights become *non-persistent* buffers: the module is
frozen, gradients flow to the input only, and state_dicts (hence our checkpoints) never carry
the third-party weights.

Why not onnx2torch (measured 2026-11-29, issue 14; ``benchmarks/bench_embedder.py``):

* it does not import here: ``import onnx2torch`` imports torchvision, and the torchvision 0.28.0
  wheels on PyPI (cp311 and cp313) link libtorch_cuda.so / libc10_cuda.so / libcudart.so.13,
  which the pinned torch 2.13.0+cpu does not have ("RuntimeError: operator torchvision::nms
  does not exist"); a CPU torchvision build is not on PyPI, and CUDA torch is a multi-GB install;
* with torchvision stubbed out for the measurement, its MobileFaceNet matched onnxruntime
  (2.6e-6) but only at batch 1 — the graph's constant ``Reshape [1, -1]`` turns a batch of 2
  into one (1, 256) row, silently — and its weights are trainable parameters in the state_dict
  (167 keys), so we would still need our own graph rewrite and buffer conversion;
* speed, MobileFaceNet forward + backward to the input, 1 thread, AMD EPYC (2 cores, load ~5 from a
  neighbouring training job), steps/s this module vs onnx2torch: batch 64 (20 steps, 2 rounds)
  0.189 vs 0.198 with Clip as clamp; onnx2torch maps Clip(0, 6) to ReLU6, and a clamp cost ~30 %
  more per step (batch 16: 1.12 s vs 0.77 s), so Clip with both bounds runs as ``hardtanh`` here
  too. After that both run the same kernels (profile: convolution, clamp, hardtanh_backward) and
  the rest is load noise: batch 64 0.307 vs 0.343, batch 32 (5 steps, 5 rounds) 0.669 vs 0.616,
  rounds of one converter spreading 4.9–8.4 s (``benchmarks/results/embedder*.json``).
* Python 3.13: the cp313 torchvision 0.28.0 wheel links the same CUDA libraries, and the only
  torch 2.13.0 for cp313 here is PyPI's CUDA build, so neither converter was run under 3.13 on
  this machine; this module is plain Python over torch and onnx, which both publish cp313 wheels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Env = dict[str, torch.Tensor]


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, a: dict) -> torch.Tensor:
    nd = w.dim() - 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError("Conv auto_pad is not supported (export with explicit pads)")
    pads = list(a.get("pads", [0] * (2 * nd)))
    strides = a.get("strides", [1] * nd)
    dil = a.get("dilations", [1] * nd)
    group = a.get("group", 1)
    begin, end = pads[:nd], pads[nd:]
    if begin != end:  # asymmetric: pad explicitly (F.pad wants last dim first)
        x = F.pad(x, [p for i in reversed(range(nd)) for p in (begin[i], end[i])])
        begin = [0] * nd
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(x, w, b, strides, begin, dil, group)


def _gemm(a_: torch.Tensor, b_: torch.Tensor, c: torch.Tensor | None, a: dict) -> torch.Tensor:
    if a.get("transA", 0):
        a_ = a_.t()
    if a.get("transB", 0):
        b_ = b_.t()
    y = a.get("alpha", 1.0) * (a_ @ b_)
    return y if c is None else y + a.get("beta", 1.0) * c


class OnnxModule(nn.Module):
    """Runs an ONNX graph with torch ops. forward(*inputs) -> first graph output (or a tuple).

    ``batch_reshape``: a Reshape whose constant target starts with the graph's fixed batch size
    (1) keeps the input's batch instead, so models exported with batch 1 run on any batch.
    """

    def __init__(self, model, batch_reshape: bool = True) -> None:
        super().__init__()
        from onnx import numpy_helper

        g = model.graph
        self.batch_reshape = batch_reshape
        self._names: dict[str, str] = {}  # ONNX tensor name -> buffer name
        for t in g.initializer:
            self._add_const(t.name, numpy_helper.to_array(t))
        init = {t.name for t in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in init]
        self.output_names = [o.name for o in g.output]
        self.input_shape = [d.dim_value or None for d in g.input[0].type.tensor_type.shape.dim] if g.input else []
        self.nodes: list[tuple[str, list[str], list[str], dict]] = []
        for node in g.node:
            a = _attrs(node)
            if node.op_type == "Constant":  # fold into a buffer now
                self._add_const(node.output[0], _constant_value(a))
                continue
            if node.op_type not in _OPS:
                raise ValueError(f"ONNX op {node.op_type!r} is not supported by hyperobf's converter")
            self.nodes.append((node.op_type, list(node.input), list(node.output), a))
        for p in self.buffers():
            p.requires_grad_(False)

    def _add_const(self, name: str, arr: np.ndarray) -> None:
        key = f"c{len(self._names)}"
        self._names[name] = key
        self.register_buffer(key, torch.from_numpy(np.array(arr, copy=True)), persistent=False)

    def forward(self, *inputs: torch.Tensor):
        env: Env = {k: getattr(self, v) for k, v in self._names.items()}
        env.update(zip(self.input_names, inputs))
        for op, ins, outs, a in self.nodes:
            args = [env[i] if i else None for i in ins]
            res = _OPS[op](self, args, a)
            env[outs[0]] = res
        out = [env[o] for o in self.output_names]
        return out[0] if len(out) == 1 else tuple(out)


def _constant_value(a: dict) -> np.ndarray:
    from onnx import numpy_helper

    if "value" in a:
        return numpy_helper.to_array(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64),
                       ("value_floats", np.float32), ("value_ints", np.int64)):
        if key in a:
            return np.array(a[key], dtype=dtype)
    raise ValueError(f"unsupported Constant attributes: {sorted(a)}")


def _reshape(m: OnnxModule, args: list, a: dict) -> torch.Tensor:
    x, shape = args[0], [int(s) for s in args[1].tolist()]
    if not a.get("allowzero", 0):  # 0 = copy that dimension from the input
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    if m.batch_reshape and shape and shape[0] == 1 and x.shape[0] != 1:
        shape[0] = x.shape[0]
    return x.reshape(shape)


def _clip(args: list, a: dict) -> torch.Tensor:
    lo = args[1] if len(args) > 1 and args[1] is not None else a.get("min")  # opset >= 11: inputs
    hi = args[2] if len(args) > 2 and args[2] is not None else a.get("max")
    lo = float(lo) if lo is not None else None
    hi = float(hi) if hi is not None else None
    if lo is not None and hi is not None:  # ReLU6 and friends: hardtanh's kernel is ~30 % faster than clamp's
        return F.hardtanh(args[0], lo, hi)
    return args[0].clamp(lo, hi)


def _unsqueeze(args: list, a: dict) -> torch.Tensor:
    x = args[0]
    axes = args[1].tolist() if len(args) > 1 else a["axes"]
    for ax in sorted(ax % (x.dim() + len(axes)) for ax in axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(args: list, a: dict) -> torch.Tensor:
    x = args[0]
    axes = args[1].tolist() if len(args) > 1 and args[1] is not None else a.get("axes")
    if axes is None:
        return x.squeeze()
    for ax in sorted((ax % x.dim() for ax in axes), reverse=True):
        x = x.squeeze(ax)
    return x


def _gather(args: list, a: dict) -> torch.Tensor:
    x, idx = args[0], args[1].long()
    ax = a.get("axis", 0) % x.dim()
    idx = torch.where(idx < 0, idx + x.shape[ax], idx)  # ONNX allows negative indices
    out = torch.index_select(x, ax, idx.reshape(-1))
    return out.reshape(tuple(x.shape[:ax]) + tuple(idx.shape) + tuple(x.shape[ax + 1:]))


def _pool(args: list, a: dict, kind: str) -> torch.Tensor:
    k = a["kernel_shape"]
    nd = len(k)
    pads = list(a.get("pads", [0] * (2 * nd)))
    if pads[:nd] != pads[nd:]:
        raise ValueError(f"{kind} with asymmetric pads is not supported")
    s = a.get("strides", [1] * nd)
    if kind == "max":
        return F.max_pool2d(args[0], k, s, pads[:nd], ceil_mode=bool(a.get("ceil_mode", 0)))
    return F.avg_pool2d(args[0], k, s, pads[:nd], ceil_mode=bool(a.get("ceil_mode", 0)),
                        count_include_pad=bool(a.get("count_include_pad", 0)))


_OPS: dict[str, Callable[[OnnxModule, list, dict], torch.Tensor]] = {
    "Conv": lambda m, x, a: _conv(x[0], x[1], x[2] if len(x) > 2 else None, a),
    "BatchNormalization": lambda m, x, a: F.batch_norm(x[0], x[3], x[4], x[1], x[2], False, 0.0, a.get("epsilon", 1e-5)),
    "PRelu": lambda m, x, a: torch.where(x[0] >= 0, x[0], x[0] * x[1]),
    "Relu": lambda m, x, a: F.relu(x[0]),
    "Sigmoid": lambda m, x, a: torch.sigmoid(x[0]),
    "LeakyRelu": lambda m, x, a: F.leaky_relu(x[0], a.get("alpha", 0.01)),
    "Clip": lambda m, x, a: _clip(x, a),
    "Add": lambda m, x, a: x[0] + x[1],
    "Sub": lambda m, x, a: x[0] - x[1],
    "Mul": lambda m, x, a: x[0] * x[1],
    "Div": lambda m, x, a: x[0] / x[1],
    "Identity": lambda m, x, a: x[0],
    "Dropout": lambda m, x, a: x[0],  # inference graph
    "Flatten": lambda m, x, a: x[0].reshape(int(np.prod(x[0].shape[: a.get("axis", 1)])), -1),
    "Reshape": _reshape,
    "Gemm": lambda m, x, a: _gemm(x[0], x[1], x[2] if len(x) > 2 else None, a),
    "MatMul": lambda m, x, a: x[0] @ x[1],
    "GlobalAveragePool": lambda m, x, a: x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "MaxPool": lambda m, x, a: _pool(x, a, "max"),
    "AveragePool": lambda m, x, a: _pool(x, a, "avg"),
    "Transpose": lambda m, x, a: x[0].permute(*(a.get("perm") or reversed(range(x[0].dim())))),
    "Shape": lambda m, x, a: torch.tensor(x[0].shape, dtype=torch.int64, device=x[0].device),
    "Gather": lambda m, x, a: _gather(x, a),
    "Unsqueeze": lambda m, x, a: _unsqueeze(x, a),
    "Squeeze": lambda m, x, a: _squeeze(x, a),
    "Concat": lambda m, x, a: torch.cat(x, dim=a["axis"]),
}


def load_onnx_module(path: str | Path, batch_reshape: bool = True) -> OnnxModule:
    """Load an ONNX file as a frozen torch module (eval mode); ValueError for unsupported graphs."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ValueError(f"not an ONNX model ({path.name}): {type(e).__name__}") from None
    return OnnxModule(model, batch_reshape).eval()
