"""One evaluation run's shared state: data split, device, trained PSP sources, attackers.

Everything expensive is built once and cached here, so ``hyperobf eval all`` shares the PSP
HyperNets, the attacker's pre-trained ResNet trunk, embeddings and the clean-image baselines
across experiments, while each experiment stays one command on its own.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..devices import pick_device
from ..models.masknet import apply_batched
from ..spec import MaskNetSpec
from ..train.checkpoint import Loaded, load_checkpoint
from ..train.config import TrainConfig
from ..train.losses import dssim, psnr
from .embedders import load_embedders
from .fr import CentroidAttacker, Job, ResNetAttacker, pretrain_trunk
from .invnet import InvNet, restore, train_invnet
from .scales import EvalScale
from .splits import EvalData, load_split, make_split


@dataclass
class EvalContext:
    scale: EvalScale
    faces_root: Path
    models_root: Path | None
    out: Path
    seed: int = 0
    device_name: str = "auto"
    sources: dict = field(default_factory=lambda: {"psp": "glint24", "fr": "celeba299", "public": "celeba299"})
    log: callable = print
    threads: int = 0  # CPU threads for torch and onnxruntime (0 = their defaults)
    psp_overrides: dict = field(default_factory=dict)  # TrainConfig keys for every PSP training (--psp-set)
    holdout: bool = False  # validation users instead of the test users (:func:`.splits.make_split`)

    def __post_init__(self) -> None:
        self.device = pick_device(self.device_name)
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self.split = make_split(self.faces_root, self.scale, self.seed, self.sources["psp"], self.sources["fr"],
                                self.sources["public"], holdout=self.holdout)
        self.data: EvalData = load_split(self.split)
        self.timings: dict[str, float] = {"load_data": time.perf_counter() - t0}
        self._sources: dict[str, Loaded] = {}
        self._attackers: list | None = None
        self._baseline: list[dict] | None = None
        self.embedders_missing: list[str] = []

    # --- PSP side -------------------------------------------------------------------------
    def train_config(self, method: str, structure: str | None = None, **kw) -> TrainConfig:
        sc = self.scale
        base = dict(method=method, structure=structure or sc.structure, data=str(self.data.psp_root),
                    max_identities=sc.psp_identities, max_per_identity=sc.psp_per_identity, epochs=sc.psp_epochs,
                    nets_per_step=sc.psp_nets_per_step, batch_images=sc.psp_batch_images, seed=self.seed,
                    device=self.device.type, ensemble_size=sc.mix_nets)
        base.update(self.psp_overrides)  # e.g. objective=feature, structure=D (what is evaluated)
        base.update({k: v for k, v in kw.items() if v is not None})
        return TrainConfig.from_dict(base)

    def source(self, method: str, structure: str | None = None, resume_from: str | None = None, **kw) -> Loaded:
        """Train (once per run) and load a PSP source: hypernet | static | ensemble | mcdropout."""
        cfg = self.train_config(method, structure, **kw)
        key = f"{cfg.method}-{cfg.structure}-l{cfg.lambda_div:g}-a{cfg.alpha:g}-e{cfg.epochs}"
        if key not in self._sources:
            from ..train.loop import train

            t0 = time.perf_counter()
            run_dir = self.out / "psp" / key
            resume = None
            if resume_from and resume_from in self._sources:  # epoch sweep: continue a shorter run
                import shutil

                src_dir = self.out / "psp" / resume_from
                run_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(src_dir / "metrics.jsonl", run_dir / "metrics.jsonl")
                resume = src_dir / "checkpoint.pt"
            self.log(f"  training PSP source {key} ...")
            res = train(cfg, run_dir, resume=resume)
            self._sources[key] = load_checkpoint(res.checkpoint, map_location=str(self.device))
            self._sources[key].source.to(self.device)
            self.timings[f"psp:{key}"] = time.perf_counter() - t0
        return self._sources[key]

    def source_key(self, loaded: Loaded) -> str:
        return next(k for k, v in self._sources.items() if v is loaded)

    @torch.no_grad()
    def nets(self, loaded: Loaded, n: int, seed: int) -> dict[str, torch.Tensor]:
        """n MaskNets issued by the source (batched weights on the device)."""
        gen = torch.Generator().manual_seed(seed)
        return {k: v.detach().to(self.device) for k, v in loaded.source.sample(n, gen).items()}

    @torch.no_grad()
    def protect(self, spec: MaskNetSpec, params: dict[str, torch.Tensor], i: int, x: torch.Tensor) -> torch.Tensor:
        """Net i of a batch on images x: (B, 3, S, S) uint8 or float -> float [0, 1] on CPU."""
        xf = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        one = {k: v[i:i + 1] for k, v in params.items()}
        return apply_batched(spec, one, xf.to(self.device)[None])[0].cpu()

    def invnet(self, spec: MaskNetSpec, params: dict[str, torch.Tensor], held: list[int], seed: int) -> InvNet:
        t0 = time.perf_counter()
        sub = {k: v[held] for k, v in params.items()}
        net = train_invnet(spec, sub, self.data.public.images, self.scale, self.device, seed)
        self.timings["invnet"] = self.timings.get("invnet", 0.0) + time.perf_counter() - t0
        return net

    def restore(self, net: InvNet, x: torch.Tensor) -> torch.Tensor:
        return restore(net, x)

    # --- attackers ------------------------------------------------------------------------
    def attackers(self) -> list:
        if self._attackers is None:
            t0 = time.perf_counter()
            d = self.data
            trunk = pretrain_trunk(d.public.images, d.public.labels, self.scale, self.device, self.seed)
            self._attackers = [ResNetAttacker(trunk, d.distractor_train, d.distractor_val, d.targets, self.scale,
                                              self.device, self.seed)]
            embs = load_embedders(self.models_root, self.scale.embedders, self.device, self.threads)
            self.embedders_missing = [n for n in self.scale.embedders if n not in {e.name for e in embs}]
            self._attackers += [CentroidAttacker(e, d.distractor_train, d.targets) for e in embs]
            self.timings["attackers_setup"] = time.perf_counter() - t0
        return self._attackers

    def attacker_names(self) -> list[str]:
        return [a.name for a in self.attackers()]

    def attack(self, jobs: list[Job], resnet: bool | list[bool] = True) -> list[dict[str, float]]:
        """{attacker: accuracy on the target's clean test images} per job. ``resnet`` may pick the
        jobs the (expensive) ResNet attacker runs on; the embedding attackers run on all."""
        t0 = time.perf_counter()
        mask = [resnet] * len(jobs) if isinstance(resnet, bool) else list(resnet)
        out = [dict() for _ in jobs]
        for att in self.attackers():
            sel = [i for i, j in enumerate(jobs) if att.name != "resnet18" or mask[i]]
            if not sel:
                continue
            for i, r in zip(sel, att.run([jobs[i] for i in sel])):
                out[i][att.name] = r["acc"]
                if att.name == "resnet18":
                    out[i]["resnet18_epoch"] = r["epoch"]
        dt = time.perf_counter() - t0
        self.timings["attack"] = self.timings.get("attack", 0.0) + dt
        self.log(f"    attacked {len(jobs)} uploads ({sum(mask)} with ResNet-18) in {dt:.1f} s")
        return out

    def baseline(self) -> list[dict[str, float]]:
        """FR accuracy per target user when the attacker trains on the clean images."""
        if self._baseline is None:
            jobs = [Job(u, t.train.float() / 255.0) for u, t in enumerate(self.data.targets)]
            self._baseline = self.attack(jobs)
        return self._baseline

    # --- image quality --------------------------------------------------------------------
    @staticmethod
    def quality(orig: torch.Tensor, prot: torch.Tensor) -> dict[str, float]:
        """Mean DSSIM, SSIM, PSNR of protected vs original; (B, 3, S, S) in [0, 1] (or uint8 orig)."""
        a = orig.float() / 255.0 if orig.dtype == torch.uint8 else orig.float()
        d = dssim(prot.float(), a)
        return {"dssim": float(d.mean()), "ssim": float((1 - 2 * d).mean()), "psnr": float(psnr(prot.float(), a).mean()),
                "max_abs_delta": float((prot.float() - a).abs().max())}

    def write_json(self, name: str, obj: dict) -> Path:
        p = self.out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
        tmp.replace(p)
        return p
