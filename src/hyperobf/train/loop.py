"""The training loop: J = λ_div·max(J1 − α, 0) + J2 + λ_dssim·max(DSSIM − ρ, 0).

Each step samples ``nets_per_step`` MaskNets from the source and gives each its own
``batch_images`` faces; all nets run in one grouped-conv pass (models.masknet.apply_batched).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..models.hypernet import conv_param_variance
from ..models.masknet import apply_batched
from ..spec import builtin_spec
from .checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from .config import TrainConfig
from .data import FaceSet, load_image_folder, split_holdout, synthetic_faces
from .losses import budget_penalty, diversity_loss, dssim, psnr, total_loss
from .objectives import build_objective
from .sources import build_source


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


def load_faces(cfg: TrainConfig) -> FaceSet:
    if cfg.data:
        return load_image_folder(cfg.data, max_identities=cfg.max_identities, max_per_identity=cfg.max_per_identity)
    return synthetic_faces(seed=cfg.seed)


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: list[dict]
    seconds: float


def _augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    if cfg.jpeg_prob <= 0 and cfg.resize_prob <= 0:
        return x
    from .augment import upload_augment  # differentiable JPEG / resize (upload robustness)

    return upload_augment(x, cfg, gen)


@torch.no_grad()
def evaluate_quality(source, spec, faces: FaceSet, device, gen: torch.Generator, n_nets: int = 4) -> dict:
    """Held-out image quality of freshly sampled nets: mean/max DSSIM, mean PSNR, max |δ|."""
    x = faces.float().to(device)
    params = source.sample(n_nets, gen)
    xs = x.unsqueeze(0).expand(n_nets, *x.shape)
    y = apply_batched(spec, params, xs)
    d = dssim(y.flatten(0, 1), xs.flatten(0, 1))
    return {
        "dssim_mean": float(d.mean()),
        "dssim_max": float(d.max()),
        "psnr_mean": float(psnr(y.flatten(0, 1), xs.flatten(0, 1)).mean()),
        "delta_max": float((y - xs).abs().max()),
    }


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train per ``cfg``; writes checkpoint.pt, config.json and metrics.jsonl into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)  # all sampling goes through this (resumable)

    spec = builtin_spec(cfg.structure, cfg.rho_pixel)
    faces = load_faces(cfg)
    train_set, hold = split_holdout(faces, cfg.holdout_fraction, cfg.seed)
    hold = hold.subset(torch.arange(min(len(hold), 64)))
    source = build_source(spec, cfg).to(device)
    objective = build_objective(cfg, len(faces.classes)).to(device)
    opt = torch.optim.Adam(source.parameters(), lr=cfg.lr)
    start_epoch, metrics = 0, []
    if resume:
        state = torch.load(resume, map_location=device, weights_only=False)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"cannot resume from {resume}: not a HyperObf checkpoint")
        source.load_state_dict(state["source"])
        objective.load_state_dict(state["objective"])
        objective.load_extra_state(state["objective_extra"])
        opt.load_state_dict(state["optim"])
        gen.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, metrics = state["epoch"], state["metrics"]
    cfg.save(out / "config.json")

    n, b = cfg.nets_per_step, cfg.batch_images
    steps = cfg.steps_per_epoch or max(1, math.ceil(len(train_set) / (n * b)))
    x_all = train_set.float().to(device)
    y_all = train_set.labels.to(device)
    t0 = time.perf_counter()
    log = open(out / "metrics.jsonl", "a" if resume else "w")
    for epoch in range(start_epoch, cfg.epochs):
        source.train()
        sums = {"J": 0.0, "J1": 0.0, "J2": 0.0, "dssim": 0.0, "param_var": 0.0, "clf_loss": 0.0}
        for _ in range(steps):
            idx = torch.randint(0, len(train_set), (n * b,), generator=gen).to(device)
            x, y = x_all[idx], y_all[idx]
            params = source.sample(n, gen)
            x_prot = apply_batched(spec, params, x.view(n, b, *x.shape[1:])).flatten(0, 1)  # (n*b, 3, H, W)
            d = dssim(x_prot, x)
            j1 = objective.j1(x, _augment(x_prot, cfg, gen), y)
            var = conv_param_variance(params)
            j2 = diversity_loss(var)
            loss = total_loss(j1, j2, cfg.lambda_div, cfg.alpha) + cfg.lambda_dssim * budget_penalty(d, cfg.dssim_budget)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clf_loss = objective.update(x, x_prot, y)
            for k, v in (("J", loss), ("J1", j1), ("J2", j2), ("dssim", d.mean()), ("param_var", var), ("clf_loss", clf_loss)):
                sums[k] += float(v.detach() if torch.is_tensor(v) else v) / steps
        source.eval()
        row = {"epoch": epoch + 1, **sums, "holdout": evaluate_quality(source, spec, hold, device, gen),
               "seconds": round(time.perf_counter() - t0, 3)}
        metrics.append(row)
        log.write(json.dumps(row) + "\n")
        log.flush()
        save_checkpoint(
            out / "checkpoint.pt", spec, cfg, source,
            objective=objective.state_dict(), objective_extra=objective.extra_state(),
            optim=opt.state_dict(), rng=gen.get_state(), torch_rng=torch.get_rng_state(),
            epoch=epoch + 1, metrics=metrics, classes=faces.classes,
        )
        if progress:
            progress(epoch + 1, cfg.epochs)
    log.close()
    return TrainResult(out / "checkpoint.pt", metrics, time.perf_counter() - t0)
