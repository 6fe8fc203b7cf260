"""`hyperobf eval frontier`: how much protection each DSSIM budget buys, per protector and attacker.

Protectors (the ``protector`` field; ``method`` stays the PSP's training source):
* ``net:<name>`` — each target user gets its own MaskNet from a trained checkpoint (seeded z),
  under the budget rule; ``net:<name> as issued`` is the same net without it (what ships today);
  ``net:<name> filled ×s`` (``--fill-budget s``) — the same δ scaled *up* by at most s until it uses
  the budget (a net that uses less than ρ is not credited with what it left unused: this measures it);
* ``limit-untargeted`` / ``limit-targeted`` — per-image optimisation against the white-box
  embedder, with the stopping rule (:mod:`.limit`);
* ``limit-errmin`` — per-image error-minimising noise against a surrogate with the from-scratch
  attacker's architecture (:mod:`.limit_errmin`): the yardstick for recognisers trained on the uploads;
* ``hybrid:<name> K=k`` — the user's net gives δ₀, then k signed-gradient steps against the
  refinement embedder (the one that could ship on the device), under the budget rule.
* ``net:<name> inverted (n held)`` (``--inversion``) — the net's uploads after the attacker's InvNet,
  trained on n nets of the same HyperNet that it holds (:mod:`.frontier_inversion`; E3/E4); with hybrid
  K > 0 also ``hybrid:<name> K=k inverted (n held)``: the attacker's held nets run with the same K steps.

Data: the evaluation's CelebA split (targets, distractors; :mod:`.splits`). Each target uploads
``uploads`` protected photos and keeps its clean test photos. Attackers and protocols:
* ``<embedder>/query`` — protected uploads identified against a clean gallery (distractor
  centroids + every target's clean test centroid): the face-search engine.
* ``<embedder>/gallery`` — the target's clean test photos identified when the gallery holds the
  protected uploads as the target's class (Fawkes's protocol).
* ``<embedder>/<protocol>+<counter>`` (``--counters``) — the same after the attacker passes the
  protected uploads through a counter (:mod:`.counters`: JPEG, resize, squeezing, blur).
* ``resnet18/gallery`` (optional, costly on a CPU) — ResNet-18 pre-trained on the public set and
  fine-tuned on distractors + protected uploads, tested on the clean photos.
Every number is per target user, then mean ± sd over users; the clean level of each attacker
and protocol is the first row.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from ..refiner_meta import DEFAULT_STEP
from ..train.feature import identity_centroids
from ..train.losses import dssim
from .counters import get_counter
from .fr import CentroidAttacker, Job
from .frontier_inversion import inversion_rows
from .limit import LimitConfig, fit_budget, far_targets, limit_until_stable
from .report import machine
from .stats import summary

if TYPE_CHECKING:
    from ..train.checkpoint import Loaded


@dataclass
class FrontierConfig:
    rhos: tuple[float, ...] = (0.007, 0.012, 0.017)
    uploads: int = 10  # protected uploads per target user
    checkpoints: tuple[str, ...] = ()
    limit_modes: tuple[str, ...] = ("untargeted", "targeted")
    limit_steps: int = 100
    limit_max_steps: int = 400
    limit_tol: float = 0.02
    limit_lr: float = 0.05  # 0.01 needed > 100 steps to reach the budget (measured: 0.68 at 50, 0.22 at 100)
    fill_budget: float = 0.0  # > 1: also a "filled" row per net, δ scaled up by at most this to use ρ
    errmin_rounds: int = 25  # min–min turns at most of the errmin limit (it stops earlier when its surrogate fits)
    errmin_train_steps: int = 10  # its surrogate's steps per turn (Huang et al.: 10)
    errmin_decay: bool = False  # cosine decay of its surrogate's rate over the turns
    hybrid_k: tuple[int, ...] = (0, 5, 10, 25)
    hybrid_step: float = DEFAULT_STEP  # the refiner's default step (one source: refiner_meta)
    hybrid_embedder: str = "dlib"  # what the device would bundle (MIT); mobilefacenet = white box
    whitebox: str = "mobilefacenet"
    resnet: bool = False  # ResNet-18 pre-trained on the public set, fine-tuned on the uploads
    resnet_scratch: bool = False  # ResNet-18 trained from scratch on distractors + uploads
    resnet_rhos: tuple[float, ...] = ()  # budgets at which the ResNets attack (empty: all); costly on a CPU
    counters: tuple[str, ...] = ()  # eval.counters names: the embedders also see the uploads after each
    # one ResNet attacker per entry: "none" = plain; a counter name = it squeezes every image it sees through it
    resnet_counters: tuple[str, ...] = ("none",)
    resnet_on: tuple[str, ...] = ()  # row kinds the ResNets attack (row_kind; empty: every kind)
    inversion: tuple[int, ...] = ()  # held-net counts of the inversion attacker (E3/E4), at the ResNets' budgets
    seed: int = 0
    extra: dict = field(default_factory=dict)


class QueryAttacker:
    """Protected uploads vs a clean gallery: distractor centroids + every target's clean test centroid."""

    def __init__(self, embedder, distractor_train, targets) -> None:
        self.embedder, self.name = embedder, embedder.name
        n_d = len(distractor_train.classes)
        e_d = embedder.embed(distractor_train.float())
        clean = [F.normalize(embedder.embed(t.test.float() / 255.0).sum(0, keepdim=True), dim=1) for t in targets]
        self.gallery = torch.cat([identity_centroids(e_d, distractor_train.labels, n_d), *clean])  # (D + U, 128)
        self.n_d = n_d

    def identified(self, user: int, x: torch.Tensor) -> float:
        pred = (self.embedder.embed(x) @ self.gallery.T).argmax(1)
        return float((pred == self.n_d + user).float().mean())


class Frontier:
    """Builds attackers once and measures every protector's protected uploads."""

    def __init__(self, ctx, cfg: FrontierConfig, log: Callable[[str], None] = print) -> None:
        from .embedders import load_embedders

        self.ctx, self.cfg, self.log = ctx, cfg, log
        d = ctx.data
        self.uploads = [t.train[:cfg.uploads] for t in d.targets]  # (U,) of (n, 3, S, S) uint8
        embs = load_embedders(ctx.models_root, ("mobilefacenet", "dlib"), ctx.device, ctx.threads)
        if not embs:
            raise ValueError(f"no face embedder under {ctx.models_root} (mobilefacenet.onnx, dlib_resnet_faceapi/)")
        self.embedders = {e.name: e for e in embs}
        self.query = {n: QueryAttacker(e, d.distractor_train, d.targets) for n, e in self.embedders.items()}
        self.gallery = {n: CentroidAttacker(e, d.distractor_train, d.targets) for n, e in self.embedders.items()}
        self.resnets = []  # trained on distractors + the protected uploads, tested on the clean photos
        if cfg.resnet or cfg.resnet_scratch:
            from .fr import ResNetAttacker, pretrain_trunk

            trunks = ([pretrain_trunk(d.public.images, d.public.labels, ctx.scale, ctx.device, ctx.seed)]
                      if cfg.resnet else []) + ([None] if cfg.resnet_scratch else [])  # None: from scratch
            for trunk in trunks:
                for c in cfg.resnet_counters:
                    self.resnets.append(ResNetAttacker(trunk, d.distractor_train, d.distractor_val, d.targets,
                                                       ctx.scale, ctx.device, ctx.seed, None if c == "none" else c))
        self._grad_embedders: dict[str, torch.nn.Module] = {}
        self._checkpoints: dict[str, Loaded] = {}  # path -> checkpoint, loaded once per run

    def checkpoint(self, path: str) -> Loaded:
        """The trained checkpoint at ``path`` (loaded on first use; its deltas, similarity and held nets share it)."""
        from ..train.checkpoint import load_checkpoint

        key = str(path)
        if key not in self._checkpoints:
            self._checkpoints[key] = load_checkpoint(path)
        return self._checkpoints[key]

    # --- embedders with gradients (white box / refinement) --------------------------------------
    def grad_embedder(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        if name not in self._grad_embedders:
            root = self.ctx.models_root
            if name == "mobilefacenet":
                from ..train.feature import load_embedder

                self._grad_embedders[name] = load_embedder(root / "mobilefacenet.onnx")
            elif name == "dlib":
                from .dlib_resnet import load_dlib_resnet

                self._grad_embedders[name] = load_dlib_resnet(root / "dlib_resnet_faceapi").embed_differentiable
            elif name == "both":  # an ensemble white box: both unit embeddings, concatenated (N, 256)
                a, b = self.grad_embedder("mobilefacenet"), self.grad_embedder("dlib")
                self._grad_embedders[name] = lambda x: F.normalize(torch.cat([a(x), b(x)], 1), dim=1)
            else:
                raise ValueError(f"unknown embedder {name!r} (mobilefacenet | dlib | both)")
        return self._grad_embedders[name]

    # --- measuring ----------------------------------------------------------------------------
    @torch.no_grad()
    def measure(self, protected: list[torch.Tensor], resnets: bool = True) -> dict:
        """protected[u]: (n, 3, S, S) float [0, 1] (8-bit grid) uploads of user u -> per-user numbers."""
        out: dict = {"per_user": {}}
        clean = [u.float() / 255.0 for u in self.uploads]
        d = torch.cat([dssim(p, c) for p, c in zip(protected, clean)])
        out["dssim_mean"], out["dssim_max"] = float(d.mean()), float(d.max())
        out["linf_max"] = float(max((p - c).abs().max() for p, c in zip(protected, clean)))
        for name, e in self.embedders.items():
            cos = torch.cat([(e.embed(p) * e.embed(c)).sum(1) for p, c in zip(protected, clean)])
            out[f"cos_{name}"] = float(cos.mean())
            q = self.query[name]
            out["per_user"][f"{name}/query"] = [q.identified(u, p) for u, p in enumerate(protected)]
            out["per_user"][f"{name}/gallery"] = [r["acc"] for r in self.gallery[name].run(
                [Job(u, p) for u, p in enumerate(protected)])]
        for c in self.cfg.counters:  # the attacker first transforms the protected uploads (JPEG, resize, ...)
            pc = [get_counter(c)(p) for p in protected]
            for name in self.embedders:
                out["per_user"][f"{name}/query+{c}"] = [self.query[name].identified(u, p) for u, p in enumerate(pc)]
                out["per_user"][f"{name}/gallery+{c}"] = [r["acc"] for r in self.gallery[name].run(
                    [Job(u, p) for u, p in enumerate(pc)])]
        for net in self.resnets if resnets else ():
            with torch.enable_grad():  # the attacker trains (measure itself runs under no_grad)
                res = net.run([Job(u, p) for u, p in enumerate(protected)])
            out["per_user"][f"{net.name}/gallery" + (f"+{net.counter}" if net.counter else "")] = [r["acc"] for r in res]
        out["acc"] = {k: summary(v) for k, v in out["per_user"].items()}
        return out

    # --- protectors ---------------------------------------------------------------------------
    @torch.no_grad()
    def net_deltas(self, checkpoint: str) -> tuple[str, float, list[torch.Tensor]]:
        """(name, ρ_pixel, δ per user) of the checkpoint's nets, one net per target user (seeded z)."""
        from ..models.masknet import apply_batched

        loaded = self.checkpoint(checkpoint)
        src = loaded.source.eval()
        z = self.user_latents(src.z_dim)
        deltas = []
        for u, up in enumerate(self.uploads):
            params = src.issue(z[u:u + 1])
            x = up.float() / 255.0
            deltas.append(apply_batched(loaded.spec, params, x[None])[0] - x)
        return Path(checkpoint).parent.name or Path(checkpoint).stem, loaded.spec.rho_pixel, deltas

    def net_similarity(self, checkpoint: str, per_user: int = 5) -> dict:
        """How alike the target users' nets perturb the same faces (:mod:`.alike`): every user's net (the z of
        net_deltas) on the first ``per_user`` uploads of every user. Per-user nets that all output one δ are
        one net to an attacker who collects them (E3/E4)."""
        from .alike import issued_similarity

        if len(self.uploads) < 2:
            return {}
        loaded = self.checkpoint(checkpoint)
        return issued_similarity(loaded, self.user_latents(loaded.source.z_dim), self.probe_faces(per_user))

    def user_latents(self, z_dim: int) -> torch.Tensor:
        """(U, z_dim): the target users' secret z, one per user (seeded; the attacker's accounts use their own)."""
        return torch.randn(len(self.uploads), z_dim, generator=torch.Generator().manual_seed(self.cfg.seed + 1))

    def probe_faces(self, per_user: int = 5) -> torch.Tensor:
        """(U·per_user, 3, S, S) float: the first uploads of every user, on which nets are compared."""
        return torch.cat([u[:per_user] for u in self.uploads]).float() / 255.0

    def limit(self, rho: float, mode: str) -> tuple[list[torch.Tensor], list[dict]]:
        cfg, x = self.cfg, [u.float() / 255.0 for u in self.uploads]
        if mode == "errmin":  # against training on the uploads: a surrogate with the attacker's recipe
            from .limit_errmin import ErrMinConfig, errmin_limit

            sc, dist = self.ctx.scale, self.ctx.data.distractor_train
            ec = ErrMinConfig(rho=rho, rho_pixel=cfg.extra.get("limit_rho_pixel", 0.05), rounds=cfg.errmin_rounds,
                              train_steps=cfg.errmin_train_steps, decay=cfg.errmin_decay, lr=cfg.limit_lr,
                              model_lr=sc.fr_lr, width=sc.fr_width, shift=sc.fr_shift, batch=sc.fr_batch)
            return errmin_limit(dist.images, dist.labels, x, ec, cfg.seed, log=self.log)
        phi = self.grad_embedder(cfg.whitebox)
        sizes = [len(v) for v in x]
        flat = torch.cat(x)
        target = None
        if mode == "targeted":  # Fawkes: a far identity among the distractors, one per user
            dist = self.ctx.data.distractor_train
            with torch.no_grad():
                e_d = torch.cat([phi(dist.float()[i:i + 64]) for i in range(0, len(dist), 64)])
                cents = identity_centroids(e_d, dist.labels, len(dist.classes))
                own = F.normalize(torch.stack([phi(v).mean(0) for v in x]), dim=1)
            pick = far_targets(cents, own, cfg.seed)
            target = torch.cat([cents[pick[u]].expand(n, -1) for u, n in enumerate(sizes)])
        q = self.query["mobilefacenet" if cfg.whitebox == "both" else cfg.whitebox]  # the stopping rule's judge

        def identified(prot: torch.Tensor) -> float:
            parts = prot.split(sizes)
            return sum(q.identified(u, p) for u, p in enumerate(parts)) / len(parts)

        lc = LimitConfig(rho=rho, rho_pixel=cfg.extra.get("limit_rho_pixel", 0.05), mode=mode,
                         steps=cfg.limit_steps, lr=cfg.limit_lr)
        prot, hist = limit_until_stable(phi, flat, target, lc, identified, cfg.limit_tol, cfg.limit_max_steps,
                                        cfg.seed, log=self.log)
        return list(prot.split(sizes)), hist

    def _device_embedder(self):
        """The embedder the device would bundle (``hybrid_embedder``), loaded once, for gradients."""
        from ..refine.embedders import load_refine_embedder

        cfg = self.cfg
        if cfg.hybrid_embedder not in self._grad_embedders:
            self._grad_embedders[cfg.hybrid_embedder] = load_refine_embedder(
                cfg.hybrid_embedder if cfg.hybrid_embedder == "dlib" else self.ctx.models_root / "mobilefacenet.onnx",
                self.ctx.models_root)
        return self._grad_embedders[cfg.hybrid_embedder]

    def refiner(self, k: int, rho_pixel: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """(x, δ₀) -> δ after the device's K steps: what an attacker's copy of the tool does after its nets."""
        from ..refine.step import refine_torch

        phi = self._device_embedder()
        return lambda x, d: refine_torch(phi, x, d, k, self.cfg.hybrid_step, rho_pixel)

    def hybrid(self, deltas: list[torch.Tensor], rho_pixel: float) -> dict[int, list[torch.Tensor]]:
        """{K: δ per user} after K refinement steps from the nets' δ₀ (budget rule applied later): the
        device's own step (:func:`hyperobf.refine.step.refine_torch`, the graph the ONNX step is traced
        from) against the embedder the device would bundle."""
        from ..refine.step import refine_torch

        cfg = self.cfg
        phi = self._device_embedder()
        x = [u.float() / 255.0 for u in self.uploads]
        sizes = [len(v) for v in x]
        xs, delta, done, out = torch.cat(x), torch.cat(deltas), 0, {}
        for k in sorted(set(cfg.hybrid_k)):  # snapshots: continue from the previous K
            delta = refine_torch(phi, xs, delta, k - done, cfg.hybrid_step, rho_pixel)
            done = k
            out[k] = list(delta.split(sizes))
        return out


ROW_KINDS = ("clean", "net", "filled", "inverted", "hybrid", "limit")


def row_kind(protector: str) -> str:
    """clean | net | filled | inverted | hybrid | limit: what --resnet-on selects."""
    if " inverted (" in protector:
        return "inverted"
    if " filled ×" in protector:
        return "filled"
    return protector.split(":")[0].split("-")[0].split(" ")[0]


def run_frontier(ctx, cfg: FrontierConfig, log: Callable[[str], None] = print) -> dict:
    """Every protector at every ρ; returns the JSON-ready result (rows + clean level)."""
    t_all = time.perf_counter()
    fr = Frontier(ctx, cfg, log)
    rows: list[dict] = []
    # every row as soon as it is measured: an interrupted run (hours on a CPU) keeps what it measured
    rows_log = ctx.out / "rows.jsonl"
    rows_log.write_text("")

    def add(protector: str, rho: float | None, protected: list[torch.Tensor], seconds: float, **extra) -> None:
        # the ResNets attack the clean row always, the other rows at --resnet-rho's budgets (every row without it)
        at_rho = not cfg.resnet_rhos or rho == 0.0 or rho in cfg.resnet_rhos
        m = fr.measure(protected, resnets=at_rho and (not cfg.resnet_on or row_kind(protector) in cfg.resnet_on))
        row = {"protector": protector, "rho": rho, "seconds": round(seconds, 1), **m, **extra}
        rows.append(row)
        with rows_log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        accs = "  ".join(f"{k} {v['mean']:.2f}±{v['sd']:.2f}" for k, v in m["acc"].items())
        log(f"  {protector:28s} rho {rho if rho is not None else '-':>6}  DSSIM {m['dssim_mean']:.4f} "
            f"(max {m['dssim_max']:.4f})  cos {m.get('cos_mobilefacenet', float('nan')):.3f}  {accs}")

    t = time.perf_counter()
    add("clean", 0.0, [u.float() / 255.0 for u in fr.uploads], time.perf_counter() - t)
    nets = []
    for ck in cfg.checkpoints:
        name, rho_pixel, deltas = fr.net_deltas(ck)
        nets.append((name, rho_pixel, deltas, ck))
        x = [u.float() / 255.0 for u in fr.uploads]
        add(f"net:{name} as issued", None, [((xi + di).clamp(0, 1) * 255).round() / 255 for xi, di in zip(x, deltas)],
            0.0, checkpoint=str(ck), between_users=fr.net_similarity(ck))
    hybrid_cache = {}
    for rho in cfg.rhos:
        log(f"rho {rho}:")
        invert = bool(cfg.inversion) and (not cfg.resnet_rhos or rho in cfg.resnet_rhos)  # inversion rows at this ρ
        x = [u.float() / 255.0 for u in fr.uploads]
        for name, rho_pixel, deltas, ck in nets:
            t = time.perf_counter()
            fill = fr.checkpoint(ck).config.ship_fill  # the fill the net ships with (1: none)
            own = [fit_budget(xi, di, rho, rho_pixel, s_max=fill) for xi, di in zip(x, deltas)]
            add(f"net:{name}", rho, own, time.perf_counter() - t, checkpoint=str(ck))
            if cfg.fill_budget > 1.0:
                t = time.perf_counter()
                filled = [fit_budget(xi, di, rho, rho_pixel, s_max=cfg.fill_budget) for xi, di in zip(x, deltas)]
                add(f"net:{name} filled ×{cfg.fill_budget:g}", rho, filled, time.perf_counter() - t, checkpoint=str(ck),
                    filled=cfg.fill_budget)  # not what the device ships: frontier_record skips it
            if invert:
                for protector, restored, secs, extra in inversion_rows(fr, ck, f"net:{name}", rho, own, cfg.inversion):
                    add(protector, rho, restored, secs, **extra)
            if cfg.hybrid_k and any(k > 0 for k in cfg.hybrid_k):
                if name not in hybrid_cache:  # the steps do not depend on ρ: computed once, fitted per ρ
                    t = time.perf_counter()
                    hybrid_cache[name] = (fr.hybrid(deltas, rho_pixel), time.perf_counter() - t)
                snaps, secs = hybrid_cache[name]
                for k in sorted(snaps):
                    if k == 0:
                        continue
                    mine = [fit_budget(xi, di, rho, rho_pixel, s_max=fill) for xi, di in zip(x, snaps[k])]
                    add(f"hybrid:{name} K={k}", rho, mine, secs, refine_embedder=cfg.hybrid_embedder, k=k,
                        step=cfg.hybrid_step)
                    if invert:  # E3/E4 for the hybrid
                        for protector, restored, secs_inv, extra in inversion_rows(
                                fr, ck, f"hybrid:{name} K={k}", rho, mine, cfg.inversion, fr.refiner(k, rho_pixel)):
                            add(protector, rho, restored, secs_inv, refine_embedder=cfg.hybrid_embedder, k=k, **extra)
        for mode in cfg.limit_modes:
            t = time.perf_counter()
            prot, hist = fr.limit(rho, mode)
            if mode == "errmin":  # no embedder: its surrogate is the from-scratch attacker's architecture
                from .limit_errmin import limit_name

                add(limit_name(cfg.errmin_train_steps, cfg.errmin_decay), rho, prot, time.perf_counter() - t,
                    history=hist, rounds=cfg.errmin_rounds, train_steps=cfg.errmin_train_steps, decay=cfg.errmin_decay)
                continue
            name = f"limit-{mode}" + ("" if cfg.whitebox == "mobilefacenet" else f" vs {cfg.whitebox}")
            add(name, rho, prot, time.perf_counter() - t, history=hist, whitebox=cfg.whitebox)
    return {
        "rows": rows, "config": {**cfg.__dict__, "rhos": list(cfg.rhos)}, "seconds": round(time.perf_counter() - t_all, 1),
        "targets": len(fr.uploads), "uploads_per_target": cfg.uploads,
        "test_per_target": [len(t.test) for t in ctx.data.targets],
        "distractors": len(ctx.data.distractor_train.classes), "attackers": sorted({k for r in rows for k in r["acc"]}),
        "machine": {**machine(), "processor": machine().get("cpu") or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "loadavg": list(os.getloadavg())},
    }
