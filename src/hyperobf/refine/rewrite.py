"""Rewrite the backward ops of a traced refinement step into ops that have ONNX translations.

``make_fx(..., decomposition_table=core_aten_decompositions())`` leaves a few core-ATen backward ops
that the ONNX exporter cannot translate. Φ is frozen, so only gradients w.r.t. activations are
needed, and each is a forward op with a known kernel:

* ``convolution_backward`` -> its grad_input is the transposed convolution of grad_output with the
  forward weight (same stride, padding, dilation, groups; output_padding from the shapes); the
  grad_weight / grad_bias outputs must be unused (the output mask says so).
* ``avg_pool2d_backward`` -> a depthwise transposed convolution with a constant 1/(k·k) kernel
  (no ceil mode; zero padding only with count_include_pad).
* ``max_pool2d_with_indices_backward`` -> grad scattered (added) into the argmax positions the forward
  pool returned: ScatterElements(reduction=add) on the flattened planes.

Anything else left without a translation shows up as an export error naming the op.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

aten = torch.ops.aten


def _shape(n: fx.Node) -> tuple[int, ...]:
    return tuple(n.meta["val"].shape)


def _out_pad(in_hw: tuple[int, ...], out_hw: tuple[int, ...], k: list[int], stride: list[int],
             pad: list[int], dil: list[int]) -> list[int]:
    """output_padding making a transposed conv give back the forward input's size exactly."""
    return [in_hw[i] - ((out_hw[i] - 1) * stride[i] - 2 * pad[i] + dil[i] * (k[i] - 1) + 1) for i in range(len(k))]


def _replace_grad_input(g: fx.Graph, node: fx.Node, make) -> None:
    """Swap ``node`` (tuple-valued: getitem users; or a plain tensor) for the node ``make()`` builds."""
    with g.inserting_before(node):
        new = make()
    new.meta["val"] = None
    if any(u.target is operator.getitem for u in node.users):
        for u in list(node.users):
            if u.args[1] == 0:
                new.meta["val"] = u.meta.get("val")
                u.replace_all_uses_with(new)
            elif u.users:
                raise ValueError(f"{node.target}: output {u.args[1]} is used; only grad_input can be rewritten")
            g.erase_node(u)
    else:
        new.meta["val"] = node.meta.get("val")
        node.replace_all_uses_with(new)
    g.erase_node(node)


def _conv_backward(gm: fx.GraphModule, n: fx.Node) -> None:
    go, inp, w, _bias_sizes, stride, pad, dil, transposed, _op, groups, mask = n.args
    if transposed or not mask[0] or mask[1] or mask[2]:
        raise ValueError("convolution_backward: only grad_input of a plain convolution can be rewritten "
                         "(is a weight trainable?)")
    k = list(_shape(w)[2:])
    outpad = _out_pad(_shape(inp)[2:], _shape(go)[2:], k, list(stride), list(pad), list(dil))
    _replace_grad_input(gm.graph, n, lambda: gm.graph.call_function(
        aten.convolution.default, (go, w, None, list(stride), list(pad), list(dil), True, outpad, groups)))


def _avg_pool_backward(gm: fx.GraphModule, n: fx.Node) -> None:
    go, inp, k, stride, pad, ceil, count_pad, divisor = n.args
    k = list(k) if len(k) == 2 else [k[0]] * 2
    stride = list(stride) if stride else k
    stride = stride if len(stride) == 2 else stride * 2
    pad = list(pad) if len(pad) == 2 else list(pad) * 2
    if ceil or divisor is not None or (any(pad) and not count_pad):
        raise ValueError("avg_pool2d_backward: ceil_mode, divisor_override or count_include_pad=False not supported")
    c = _shape(inp)[1]
    name = f"_avgpool_kernel_{len([a for a in dir(gm) if a.startswith('_avgpool_kernel_')])}"
    gm.register_buffer(name, torch.full((c, 1, k[0], k[1]), 1.0 / (k[0] * k[1])))  # (C, 1, kh, kw) depthwise
    outpad = _out_pad(_shape(inp)[2:], _shape(go)[2:], k, stride, pad, [1, 1])
    with gm.graph.inserting_before(n):
        w = gm.graph.get_attr(name)
        w.meta["val"] = getattr(gm, name)
    _replace_grad_input(gm.graph, n, lambda: gm.graph.call_function(
        aten.convolution.default, (go, w, None, stride, pad, [1, 1], True, outpad, c)))


def _max_pool_backward(gm: fx.GraphModule, n: fx.Node) -> None:
    go, inp, _k, _s, _p, _d, _ceil, idx = n.args
    nb, c, h, w = _shape(inp)
    g = gm.graph

    def make() -> fx.Node:
        flat_g = g.call_function(aten.view.default, (go, [nb, c, -1]))  # (N, C, h'·w')
        flat_i = g.call_function(aten.view.default, (idx, [nb, c, -1]))  # indices into each h·w plane
        zeros = g.call_function(aten.zeros.default, ([nb, c, h * w],), {"dtype": torch.float32})
        acc = g.call_function(aten.scatter_add.default, (zeros, 2, flat_i, flat_g))  # (N, C, h·w)
        return g.call_function(aten.view.default, (acc, [nb, c, h, w]))

    _replace_grad_input(g, n, make)


_PASSES = {
    aten.convolution_backward.default: _conv_backward,
    aten.avg_pool2d_backward.default: _avg_pool_backward,
    aten.max_pool2d_with_indices_backward.default: _max_pool_backward,
}


def rewrite_backward_ops(gm: fx.GraphModule) -> dict[str, int]:
    """Rewrite in place (see module doc); returns how many nodes of each kind were rewritten."""
    counts: dict[str, int] = {}
    for n in list(gm.graph.nodes):
        fn = _PASSES.get(n.target) if n.op == "call_function" else None
        if fn is not None:
            fn(gm, n)
            counts[str(n.target)] = counts.get(str(n.target), 0) + 1
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return counts
