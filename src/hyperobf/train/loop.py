"""The training loop: J = λ_div·max(J1 − α, 0) + J2 + λ_dssim·max(DSSIM − ρ, 0) [+ λ_sig·signature]
[+ λ_sat·max(saturation − cap, 0)].

Each step samples ``nets_per_step`` MaskNets from the source and gives each its own
``batch_images`` faces; all nets run in one grouped-conv pass (models.masknet.apply_batched).
Baselines (static / ensemble / mcdropout) share this path; they are trained without the
diversity term and the hinge: J = J1 + λ_dssim·max(DSSIM − ρ, 0).
Optional: upload augmentation between MaskNet and loss, bf16 autocast on CUDA, torch.compile,
multi-GPU under torchrun (see :mod:`.distributed`).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..devices import pick_device
from ..models.masknet import apply_batched
from ..spec import builtin_spec
from . import distributed
from .checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from .config import TrainConfig, canonical_objective
from .data import FaceSet, load_image_folder, split_holdout, synthetic_faces
from .diversity import param_variance
from .evaluate import evaluate_epoch, evaluate_quality  # noqa: F401  (evaluate_quality: public here too)
from .losses import (budget_penalty, budget_scale, diversity_loss, dssim, saturation, scaled, signature_loss,
                     signature_terms, total_loss)
from .objectives import build_objective
from .sources import build_source


def load_faces(cfg: TrainConfig) -> FaceSet:
    if cfg.data:
        return load_image_folder(cfg.data, cfg.image_size, cfg.max_identities, cfg.max_per_identity)
    return synthetic_faces(size=cfg.image_size, seed=cfg.seed)


def training_split(cfg: TrainConfig) -> tuple[FaceSet, FaceSet]:
    """(train, held-out) faces exactly as :func:`train` splits them (for later evaluation)."""
    return split_holdout(load_faces(cfg), cfg.holdout_fraction, cfg.seed)


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


def step_loss(spec, cfg: TrainConfig, objective, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
              gen: torch.Generator, independent: bool = False, autocast=contextlib.nullcontext,
              keys: torch.Tensor | None = None):
    """One step's loss for n nets (params {name: (n, ...)}) on x (n·b, 3, H, W) with labels y (n·b,).

    ``keys`` (n, ...): what made each net (its z, its member index), for objectives that give each
    user its own target (``objective.needs_keys``: the targeted feature objective).

    Returns (loss, protected faces (n·b, 3, H, W), {J1, J2, dssim, dssim_max, param_var, sig_within,
    sig_between, saturation} tensors).
    """
    n = next(iter(params.values())).shape[0]
    with autocast():
        x_prot = apply_batched(spec, params, x.view(n, -1, *x.shape[1:])).flatten(0, 1)
    x_prot = x_prot.float()
    delta = x_prot - x  # (n·b, 3, H, W): the net's own δ, already within ±ρ_pixel and [0, 1]
    sat = saturation(delta, cfg.rho_pixel)  # before a fill rescales it
    if cfg.budget_fill > 0:  # train as the budget rule ships: each face's δ scaled to use ρ (the scale: no gradient)
        s = budget_scale(x, delta.detach(), cfg.dssim_budget, cfg.rho_pixel, cfg.budget_fill, iters=8)
        x_prot = scaled(x, delta, s, cfg.rho_pixel)
    d = dssim(x_prot, x)  # (n·b,) in float32: SSIM of a 0.03 perturbation needs the precision
    with autocast():
        extra = {"keys": keys} if getattr(objective, "needs_keys", False) else {}
        j1 = objective.j1(x, _augment(x_prot, cfg, gen), y, **extra).float()
    var = param_variance(params)
    j2 = diversity_loss(var)
    penalty = cfg.lambda_dssim * budget_penalty(d, cfg.dssim_budget)
    # Baselines (static / ensemble / mcdropout) have no diversity term but the same hinged, weighted J1 as
    # the HyperNet (Eq. 4.4 without J2), so J1 weighs the same against the DSSIM penalty in every method.
    loss = total_loss(j1, torch.zeros_like(j2) if independent else j2, cfg.lambda_div, cfg.alpha) + penalty
    within, between = signature_terms((x_prot - x).view(n, -1, *x.shape[1:]))  # δ: (n, b, 3, H, W)
    if cfg.lambda_signature > 0:
        loss = loss + cfg.lambda_signature * signature_loss(within, between)
    if cfg.lambda_saturation > 0:
        loss = loss + cfg.lambda_saturation * torch.relu(sat - cfg.saturation_cap)
    return loss, x_prot, {"J1": j1, "J2": j2, "dssim": d.mean(), "dssim_max": d.max(), "param_var": var,
                          "sig_within": within, "sig_between": between, "saturation": sat}


def _seed_everything(cfg: TrainConfig, info: distributed.DistInfo, device: torch.device) -> torch.Generator:
    torch.manual_seed(cfg.seed + info.rank)
    if device.type == "cuda":
        if cfg.deterministic:
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:  # fixed shapes every step: let cuDNN pick the fastest grouped-conv kernels
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
    # all sampling (faces, z, dropout masks, augmentation) goes through this generator -> resumable;
    # rank 0 of a multi-GPU run draws exactly what a single process would
    return torch.Generator().manual_seed(cfg.seed + 104729 * info.rank)


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train per ``cfg``; writes checkpoint.pt, config.json and metrics.jsonl into out_dir."""
    out = Path(out_dir)
    info = distributed.setup("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    device = pick_device(cfg.device, info.local_rank)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
    gen = _seed_everything(cfg, info, device)
    amp = cfg.amp and device.type == "cuda"

    spec = builtin_spec(cfg.structure, cfg.rho_pixel)
    if cfg.image_size % spec.stride_product:
        raise ValueError(f"image_size {cfg.image_size} is not divisible by structure {spec.name}'s stride {spec.stride_product}")
    faces = load_faces(cfg)
    train_set, hold = split_holdout(faces, cfg.holdout_fraction, cfg.seed)
    hold = hold.subset(torch.arange(min(len(hold), cfg.eval_images)))
    source = build_source(spec, cfg).to(device)
    by_user = cfg.surrogate_labels == "user"  # the surrogate's classes: the pool's pseudo-users, not identities
    objective = build_objective(cfg, cfg.pool_users if by_user else len(faces.classes)).to(device)
    x_all = train_set.float().to(device)
    y_all = train_set.labels.to(device)
    if hasattr(objective, "prepare"):  # feature objective: identity centroids -> anchors
        objective.prepare(x_all, y_all, len(faces.classes))
    if cfg.compile:
        for name in ("embedder", "clf"):
            if hasattr(objective, name):
                getattr(objective, name).compile()
    clean_emb = None
    if hasattr(objective, "embed") and len(hold):
        from .feature import embed_all

        clean_emb = embed_all(objective.embed, hold.float().to(device))
    opt = torch.optim.Adam(source.parameters(), lr=cfg.lr)
    start_epoch, metrics = 0, []
    if resume:
        state = torch.load(resume, map_location="cpu", weights_only=False)  # RNG states must stay CPU tensors
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"cannot resume from {resume}: not a HyperObf checkpoint")
        source.load_state_dict(state["source"])
        before = state.get("config", {})
        before_objective = canonical_objective(before.get("objective"))  # "classifier" -> "adversarial"
        same_mode = cfg.objective != "feature" or before.get("feature_mode") == cfg.feature_mode
        if before_objective == cfg.objective and same_mode:
            objective.load_state_dict(state["objective"])
            objective.load_extra_state(state["objective_extra"])
        elif cfg.objective != "feature" or before_objective != "feature":
            raise ValueError(f"cannot resume a {before_objective} run with the {cfg.objective} objective")
        # else: a feature run switching mode (e.g. untargeted warm-up -> targeted): Φ is frozen and the
        # anchors were just derived by prepare() from the same faces, so nothing of the objective carries over
        opt.load_state_dict(state["optim"])
        gen.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, metrics = state["epoch"], state["metrics"]
        if info.active:  # other ranks continue from fresh, distinct streams (not bit-identical)
            gen.manual_seed(cfg.seed + 104729 * info.rank + 7 * start_epoch)
    if info.main:
        cfg.save(out / "config.json")

    independent = getattr(source, "independent", False)
    n, b = getattr(source, "train_nets", cfg.nets_per_step), cfg.batch_images
    pool = None
    if cfg.pool_users:  # identity-grouped batches: net i perturbs b faces of its pseudo-user's identity
        from .sampler import UserPool

        pool = UserPool(cfg.pool_users, source.z_dim, train_set.labels, gen, cfg.pool_refresh,
                        cfg.pool_refresh_fraction)
        if resume and state.get("pool"):
            pool.load_state_dict(state["pool"])
    steps = cfg.steps_per_epoch or max(1, math.ceil(len(train_set) / (n * b)))
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    t0 = time.perf_counter()
    log = open(out / "metrics.jsonl", "a" if resume else "w") if info.main else None
    for epoch in range(start_epoch, cfg.epochs):
        source.train()
        sums = {"J": 0.0, "J1": 0.0, "J2": 0.0, "dssim": 0.0, "dssim_max": 0.0, "param_var": 0.0,
                "sig_within": 0.0, "sig_between": 0.0, "saturation": 0.0, "clf_loss": 0.0}
        for _ in range(steps):
            if pool is None:
                idx = torch.randint(0, len(train_set), (n * b,), generator=gen).to(device)
                params, keys = source.sample_keyed(n, gen)  # keys: what made each net (targeted objective)
            else:
                z, idx, users = pool.batch(n, b, gen)
                idx = idx.to(device)
                params, keys = source.issue(z), source.key_of(z)
            x, y = x_all[idx], y_all[idx]
            if by_user:  # (n·b,) each face labelled with its net's pool slot
                y = users.to(device).repeat_interleave(b)
            loss, x_prot, parts = step_loss(spec, cfg, objective, params, x, y, gen, independent, autocast, keys)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(source, info)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(source.parameters(), cfg.grad_clip)
            opt.step()
            clf_loss = objective.update(x, x_prot, y, sync=lambda m: distributed.average_gradients(m, info))
            for k, v in (("J", loss), *parts.items(), ("clf_loss", clf_loss)):
                v = float(v.detach() if torch.is_tensor(v) else v)
                sums[k] = max(sums[k], v) if k == "dssim_max" else sums[k] + v / steps
        sums = {k: distributed.mean_scalar(v, info, device) for k, v in sums.items()}
        source.eval()
        if info.main:
            row = {"epoch": epoch + 1, **sums,
                   "holdout": evaluate_epoch(source, spec, hold, device, cfg.seed + 1, cfg.eval_nets,
                                             objective, clean_emb),
                   "seconds": round(time.perf_counter() - t0, 3)}
            metrics.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            save_checkpoint(
                out / "checkpoint.pt", spec, cfg, source,
                objective=objective.state_dict(), objective_extra=objective.extra_state(),
                optim=opt.state_dict(), rng=gen.get_state(), torch_rng=torch.get_rng_state(),
                epoch=epoch + 1, metrics=metrics, classes=faces.classes,
                pool=pool.state_dict() if pool is not None else None,
            )
        if progress:
            progress(epoch + 1, cfg.epochs)
    if log:
        log.close()
    distributed.teardown(info)
    return TrainResult(out / "checkpoint.pt", metrics, time.perf_counter() - t0)
