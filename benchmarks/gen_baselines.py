"""Baselines that bench_generate.py times generation against: (c) the minimal batched reference HyperNet (the
generation roof: the ratio HyperNet / reference is what the target judges) and (b) training one ensemble member.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks._common import loadavg
from hyperobf.models.hypernet import HyperNet
from hyperobf.spec import MaskNetSpec


class ReferenceHyperNet(nn.Module):
    """Minimal batched HyperNet: z -> Linear -> act -> Linear (codes) -> per layer Linear -> act -> Linear.

    The same matmuls as models.hypernet.HyperNet (weights are copied from it and the outputs checked
    equal), with none of its bookkeeping: z drawn on the device, flat (n, numel) outputs, no dict.
    """

    def __init__(self, hyper: HyperNet) -> None:
        super().__init__()
        self.z_dim, self.code_dim, self.n_layers = hyper.cfg.z_dim, hyper.cfg.code_dim, len(hyper.spec.layers)
        self.mixer = copy.deepcopy(hyper.mixer)
        self.heads = nn.ModuleList(copy.deepcopy(hyper.generators[layer.name]) for layer in hyper.spec.layers)

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        codes = self.mixer(z).view(z.shape[0], self.n_layers, self.code_dim)  # (n, L, code)
        return [head(codes[:, i]) for i, head in enumerate(self.heads)]  # L x (n, numel(w) + out_ch)

    def generate(self, n: int, dtype: torch.dtype) -> list[torch.Tensor]:
        dev = self.mixer[0].weight.device
        return self(torch.randn(n, self.z_dim, device=dev, dtype=dtype))


def cpu_bf16_native() -> bool:
    """bf16 matmuls run natively (AVX512-BF16 / AMX) rather than emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return torch.backends.mkldnn.is_available() and ("avx512_bf16" in flags or "amx_bf16" in flags)


def _dssim_fallback(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image DSSIM with an 11x11 gaussian window (sigma 1.5), depthwise convs like kornia's; (B,)."""
    import torch.nn.functional as F

    c = x.shape[1]
    g = torch.exp(-((torch.arange(11, device=x.device, dtype=x.dtype) - 5) ** 2) / (2 * 1.5 ** 2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2).expand(c, 1, 11, 11)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (5, 5, 5, 5), mode="reflect"), w, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return (1.0 - ssim.flatten(1).mean(1)) / 2.0


def measure_member(spec: MaskNetSpec, device: str, steps: int, batch: int, n_classes: int = 20) -> dict:
    """(b) Train one ensemble member (one MaskNet + the jointly trained surrogate classifier, as in
    train/loop.py with nets_per_step=1) for ``steps`` steps of ``batch`` faces at the spec's size."""
    from hyperobf.models.masknet import MaskNet
    from hyperobf.train.objectives import ClassifierObjective

    try:
        from hyperobf.train.losses import dssim  # kornia's SSIM, as in training
        dssim_impl = "kornia"
    except ImportError:  # e.g. a GPU machine's system python without kornia: same-cost stand-in
        dssim, dssim_impl = _dssim_fallback, "local 11x11 gaussian SSIM (kornia not installed)"

    g = torch.Generator().manual_seed(0)
    size = spec.input_size
    pool = torch.rand(4 * batch, 3, size, size, generator=g).to(device)  # content does not change the cost
    labels = torch.randint(0, n_classes, (4 * batch,), generator=g).to(device)
    net = MaskNet(spec).to(device)
    objective = ClassifierObjective(n_classes, lr=1e-3).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step() -> None:
        idx = torch.randint(0, len(pool), (batch,), generator=g).to(device)
        x, y = pool[idx], labels[idx]
        x_prot = net(x)
        loss = objective.j1(x, x_prot, y) + 100.0 * torch.relu(dssim(x_prot, x) - 0.01).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        objective.update(x, x_prot, y)

    for _ in range(2):  # warm-up steps (allocator, cuDNN algorithm choice)
        step()
    sync()
    per_step = []
    t0 = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        per_step.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    per_step.sort()
    return {"impl": "ensemble_member", "n": 1, "dtype": "fp32", "host_copy": False, "device": device,
            "seconds": total, "steps": steps, "batch_images": batch, "image_size": size,
            "per_step_s": per_step[len(per_step) // 2], "timer": "perf_counter", "dssim": dssim_impl, "load_1m": (loadavg() or [None])[0],
            "note": f"time to train ONE MaskNet for {steps} steps of {batch} images at {size}^2 (classifier objective "
                    f"+ DSSIM budget, Adam); a real member trains far longer (the thesis trains for hundreds of "
                    f"epochs), so N x this is a lower bound on an N-member ensemble"}


def check_reference(hyper: HyperNet, ref: ReferenceHyperNet) -> float:
    """Max |difference| between the two on the same z: the reference really computes what ours computes."""
    with torch.inference_mode():
        z = hyper.sample_z(4)
        ours, theirs = hyper(z), ref(z)
        flat = torch.cat([torch.cat([ours[f"{l.name}.weight"].flatten(1), ours[f"{l.name}.bias"]], 1)
                          for l in hyper.spec.layers], 1)
        return (flat - torch.cat(theirs, 1)).abs().max().item()
