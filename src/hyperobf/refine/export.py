"""Export one refinement step and Φ to plain ONNX, and check them against torch.

Recipe (../shared/TOOLCHAIN_NOTES.md): trace :func:`.step.refine_step` (which calls
``torch.autograd.grad``) with ``make_fx`` and the core-ATen decompositions, rewrite the backward ops
that have no ONNX translation (:mod:`.rewrite`), then ``torch.onnx.export(dynamo=True)``. Shapes are
fixed at batch 1 and 112² (the device refines one aligned face at a time).

Step graph: inputs  x (1, 3, S, S), delta (1, 3, S, S), e0 (1, D), step (), rho ()
            outputs delta_next (1, 3, S, S), dist (1,) = ‖e − e0‖ at the incoming δ,
                    grad_sign (1, 3, S, S) = sign(∇) (for parity checks; the device skips it)
Embed graph: input x (1, 3, S, S) -> e (1, D) unit.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .rewrite import rewrite_backward_ops
from .step import refine_step

STEP_INPUTS = ("x", "delta", "e0", "step", "rho")
STEP_OUTPUTS = ("delta_next", "dist", "grad_sign")
EMBED_INPUTS = ("x",)
EMBED_OUTPUTS = ("e",)
OPSET = 18


def _step_fn(embedder: nn.Module):
    """:func:`.step.refine_step` as a function of tensors only (what gets traced)."""
    def fn(x, delta, e0, step, rho):
        return refine_step(embedder, x, delta, e0, step, rho)
    return fn


def example_inputs(size: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Tracing inputs: a seeded face-like image, a small δ, its own unit embedding (shapes only matter)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=g)
    d = (torch.rand(1, 3, size, size, generator=g) - 0.5) * 0.02
    e0 = F.normalize(torch.randn(1, dim, generator=g), dim=1)
    return x, d, e0, torch.tensor(0.002), torch.tensor(0.03)


def trace_step(embedder: nn.Module, size: int, dim: int) -> tuple[torch.fx.GraphModule, dict[str, int]]:
    """The step as an fx graph of ONNX-translatable ATen ops, and how many backward ops were rewritten."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    embedder.eval()
    gm = make_fx(_step_fn(embedder), decomposition_table=core_aten_decompositions())(*example_inputs(size, dim))
    return gm, rewrite_backward_ops(gm)


def trace_embed(embedder: nn.Module, size: int) -> torch.fx.GraphModule:
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    def fn(x):
        return F.normalize(embedder(x), dim=1)

    return make_fx(fn, decomposition_table=core_aten_decompositions())(torch.rand(1, 3, size, size))


def to_onnx(gm: torch.fx.GraphModule, args: tuple, inputs: tuple[str, ...], outputs: tuple[str, ...]):
    """fx graph -> self-contained onnx.ModelProto (standard-domain ops only, else ValueError)."""
    import onnx

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(gm, args, input_names=list(inputs), output_names=list(outputs), dynamo=True,
                                 external_data=False, opset_version=OPSET, verbose=False)
    buf = io.BytesIO()
    prog.save(buf)  # self-contained: weights inside
    model = onnx.load_from_string(buf.getvalue())
    model = onnx.inline_local_functions(model) if model.functions else model
    odd = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if odd:
        raise ValueError(f"exported graph uses non-standard ops: {', '.join(odd)}")
    onnx.checker.check_model(model)
    return model


def op_counts(model) -> dict[str, int]:
    return dict(Counter(n.op_type for n in model.graph.node))


@dataclass
class Parity:
    """ONNX vs torch on the same inputs (see :func:`check_parity`)."""

    faces: int
    sign_agreement: float  # fraction of gradient-sign entries equal (zeros included)
    sign_agreement_min: float  # worst single face
    delta_max_abs_diff: float  # after one step
    delta_within_1e5: float  # fraction of δ entries within 1e-5 after one step
    k_steps: int
    delta_k_max_abs_diff: float  # after k chained steps (each side its own chain)
    embed_max_abs_diff: float  # e0 from the embed graph vs torch

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def ok(self) -> bool:
        return self.sign_agreement >= 0.999 and self.delta_within_1e5 >= 0.999 and self.embed_max_abs_diff < 1e-4


def check_parity(embedder: nn.Module, step_bytes: bytes, embed_bytes: bytes, x: np.ndarray, delta0: np.ndarray,
                 step: float, rho: float, k: int = 3, threads: int = 1) -> Parity:
    """Run both sides on faces x (N, 3, S, S) in [0, 1] with starts δ₀ (N, 3, S, S), one face at a time."""
    import onnxruntime as ort

    from ..device_runtime.session import SessionConfig, session_options

    so = session_options(SessionConfig(threads=threads))
    s_step = ort.InferenceSession(step_bytes, so, providers=["CPUExecutionProvider"])
    s_emb = ort.InferenceSession(embed_bytes, so, providers=["CPUExecutionProvider"])
    fn = _step_fn(embedder)
    st, rh = torch.tensor(step), torch.tensor(rho)
    agree, d_diff, within, dk_diff, e_diff = [], 0.0, [], 0.0, 0.0
    for i in range(len(x)):
        xt, dt = torch.from_numpy(x[i:i + 1]).float(), torch.from_numpy(delta0[i:i + 1]).float()
        with torch.no_grad():
            e0 = F.normalize(embedder(xt), dim=1)  # (1, D)
        (e0_o,) = s_emb.run(None, {"x": xt.numpy()})
        e_diff = max(e_diff, float(np.abs(e0_o - e0.numpy()).max()))
        feed = {"x": xt.numpy(), "delta": dt.numpy(), "e0": e0.numpy(), "step": np.array(step, np.float32), "rho": np.array(rho, np.float32)}
        nxt_o, _dist_o, sign_o = s_step.run(None, feed)
        nxt_t, _dist_t, sign_t = fn(xt, dt, e0, st, rh)
        agree.append(float((sign_o == sign_t.numpy()).mean()))
        diff = np.abs(nxt_o - nxt_t.numpy())
        d_diff = max(d_diff, float(diff.max()))
        within.append(float((diff <= 1e-5).mean()))
        d_o, d_t = nxt_o, nxt_t
        for _ in range(k - 1):  # chained: each side continues from its own δ
            d_o = s_step.run(["delta_next"], {**feed, "delta": d_o})[0]
            d_t = refine_step(embedder, xt, d_t, e0, st, rh)[0]
        dk_diff = max(dk_diff, float(np.abs(d_o - d_t.numpy()).max()))
    return Parity(len(x), float(np.mean(agree)), float(np.min(agree)), d_diff, float(np.mean(within)), k, dk_diff,
                  e_diff)
