"""Multi-GPU data parallelism under torchrun, kept minimal.

Every process samples its own nets and faces (its own generator stream) and computes its own
loss; gradients are averaged with one all-reduce per module before each optimiser step — the
same update DDP makes, without wrapping the source (whose ``sample``/``issue`` are not
``forward``). Without torchrun's environment (WORLD_SIZE unset or 1) everything is a no-op and
the single-process path is unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device_kind: str) -> DistInfo:
    """Join the torchrun process group if there is one (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    if device_kind == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(rank, world, local)


def average_gradients(module: nn.Module, info: DistInfo) -> None:
    """All-reduce (mean) the gradients of ``module`` across processes, flattened into one buffer."""
    if not info.active:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= info.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_scalar(value: float, info: DistInfo, device: torch.device) -> float:
    """Average a logged number across processes (rank 0 writes the logs)."""
    if not info.active:
        return value
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / info.world


def teardown(info: DistInfo) -> None:
    if info.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
