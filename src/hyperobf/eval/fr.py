"""Face-recognition attackers: what accuracy does an attacker get on a target's CLEAN faces when
the target's training images are the protected (or restored) ones?

* ResNet-18 (thesis §5.2.2): a trunk pre-trained on the attacker's public faces (the thesis starts
  from a pre-trained ResNet-18), fine-tuned on distractors + target (the thesis's 51 classes);
  early stopping on held-out distractor images (the attacker never sees the target's clean
  photos). Many such attackers train at once in a :class:`ResNetBank`.
* Embedding attackers: a frozen pretrained embedder + nearest class centroid (cosine).

A :class:`Job` is one attack: a target user and the images the attacker trains that user's class
on (plus, for the adaptive attacker, extra labelled training images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..train.flipshift import random_flip, random_shift
from .resnet import ResNetBank


@dataclass
class Job:
    user: int  # index into EvalData.targets
    target_train: torch.Tensor  # (n, 3, S, S) uint8 or float [0, 1]: what the attacker holds of the target
    extra: torch.Tensor | None = None  # (e, 3, S, S) uint8/float: more training images (adaptive attacker)
    extra_labels: torch.Tensor | None = None  # (e,) labels in 0..n_distractors (n_distractors = target)
    tag: dict = field(default_factory=dict)


def to_u8(x: torch.Tensor) -> torch.Tensor:
    """Images as the attacker stores them: 8-bit. float [0, 1] -> uint8 (uint8 passes through)."""
    return x if x.dtype == torch.uint8 else (x.clamp(0, 1) * 255).round().to(torch.uint8)


def as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def pretrain_trunk(public_x: torch.Tensor, public_y: torch.Tensor, scale, device: torch.device, seed: int) -> dict:
    """Train one ResNet-18 on the public identities; returns its trunk state (CPU tensors)."""
    keep = public_y >= 0
    x, y = public_x[keep], public_y[keep]
    n_cls = int(y.max()) + 1 if len(y) else 1
    torch.manual_seed(seed)
    net = ResNetBank(1, max(n_cls, 2), scale.fr_width).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=scale.fr_lr, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    b = scale.fr_batch * 2
    steps = max(1, math.ceil(len(x) / b))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, scale.fr_lr * 2, total_steps=steps * scale.fr_pretrain_epochs)
    xd, yd = x.to(device), y.to(device)
    net.train()
    for _ in range(scale.fr_pretrain_epochs):
        perm = torch.cat([torch.randperm(len(x), generator=gen) for _ in range(2)]).to(device)  # full batches
        for s in range(steps):
            idx = perm[s * b:(s + 1) * b]
            xb = random_flip(xd[idx].float() / 255.0, gen)[None]
            with _autocast(device):
                loss = F.cross_entropy(net(xb)[0].float(), yd[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return {k: v.detach().cpu() for k, v in net.trunk_state().items()}


class ResNetAttacker:
    """Fine-tunes banks of ResNet-18s (one per job) on distractors + the job's target images."""

    name = "resnet18"

    def __init__(self, trunk: dict | None, distractor_train, distractor_val, targets, scale, device: torch.device,
                 seed: int, counter: str | None = None):
        """``trunk`` None: trained from scratch on distractors + the target (no public pre-training).

        ``counter`` (an :mod:`.counters` name): the attacker passes every image it trains, validates and
        queries on through it (image squeezing as a defence against error-minimising noise: Liu et al.,
        2023); the target's uploads at each job."""
        self.trunk, self.scale, self.device, self.seed = trunk, scale, device, seed
        if trunk is None:
            self.name = "resnet18-scratch"
        self.counter = counter
        self.d_x = self._squeeze(distractor_train.images).to(device)  # (Nd, 3, S, S) uint8
        self.d_y = distractor_train.labels.to(device)
        self.v_x = self._squeeze(distractor_val.images).to(device)
        self.v_y = distractor_val.labels.to(device)
        self.n_cls = len(distractor_train.classes) + 1  # + the target
        self.targets = targets
        self.tests = [self._squeeze(t.test) for t in targets]  # (n_t, 3, S, S) uint8 per target

    def _squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3, S, S) uint8 or float [0, 1] -> uint8, through the attacker's counter (if any)."""
        if self.counter is None:
            return to_u8(x)
        from .counters import get_counter

        f = get_counter(self.counter)
        return torch.cat([to_u8(f(as_float(x[i:i + 256]))) for i in range(0, len(x), 256)])

    def run(self, jobs: list[Job]) -> list[dict]:
        """One result dict per job: accuracy on the target's clean test images (at the
        early-stopping epoch), distractor validation accuracy, epochs used."""
        out: list[dict | None] = [None] * len(jobs)
        # Jobs in one bank must hold equally many per-model images.
        groups: dict[int, list[int]] = {}
        for i, j in enumerate(jobs):
            n = len(j.target_train) + (0 if j.extra is None else len(j.extra))
            groups.setdefault(n, []).append(i)
        for idxs in groups.values():
            for k in range(0, len(idxs), self.scale.fr_bank):
                chunk = idxs[k:k + self.scale.fr_bank]
                for i, r in zip(chunk, self._bank([jobs[i] for i in chunk])):
                    out[i] = r
        return out  # type: ignore[return-value]

    def _bank(self, jobs: list[Job]) -> list[dict]:
        m, dev, sc = len(jobs), self.device, self.scale
        torch.manual_seed(self.seed)
        net = ResNetBank(m, self.n_cls, sc.fr_width).to(dev)
        if self.trunk is not None:
            net.load_trunk_replicated({k: v.to(dev) for k, v in self.trunk.items()})
        net.reset_head(self.n_cls, torch.Generator().manual_seed(self.seed))
        if dev.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        # Per-model part of the training set: target images (label = n_cls - 1) + extras.
        own_x, own_y = [], []
        for j in jobs:
            xs = [self._squeeze(j.target_train)]
            ys = [torch.full((len(j.target_train),), self.n_cls - 1, dtype=torch.int64)]
            if j.extra is not None:
                xs.append(self._squeeze(j.extra))
                ys.append(j.extra_labels.to(torch.int64))
            own_x.append(torch.cat(xs))
            own_y.append(torch.cat(ys))
        own_x = torch.stack(own_x).to(dev)  # (m, No, 3, S, S) uint8
        own_y = torch.stack(own_y).to(dev)  # (m, No)
        nd, no = len(self.d_x), own_x.shape[1]
        n_all, b = nd + no, sc.fr_batch
        steps = max(1, math.ceil(n_all / b))
        opt = torch.optim.AdamW(net.parameters(), lr=sc.fr_lr, weight_decay=5e-4)
        # One-cycle: warm up, then anneal to ~0 by the last epoch (a from-scratch net on ~500 faces
        # needs the annealed end; a constant rate stops while still noisy).
        sched = (torch.optim.lr_scheduler.OneCycleLR(opt, sc.fr_lr, total_steps=steps * sc.fr_epochs)
                 if sc.fr_onecycle else None)
        gen = torch.Generator().manual_seed(self.seed + 1)
        test = [self.tests[j.user] for j in jobs]
        best_val = torch.full((m,), -1.0)
        best = [dict() for _ in range(m)]
        since = torch.zeros(m, dtype=torch.int64)
        for epoch in range(sc.fr_epochs):
            net.train()
            # Same order for every model; every batch exactly b images (fixed shapes: no re-tuning
            # of conv kernels for a short last batch), wrapping around into a second permutation.
            perm = torch.cat([torch.randperm(n_all, generator=gen) for _ in range(2)]).to(dev)
            for s in range(steps):
                idx = perm[s * b:(s + 1) * b]
                is_d = idx < nd
                xd = self.d_x[idx.clamp(max=nd - 1)].float() / 255.0  # (B, 3, S, S)
                xo = own_x[:, (idx - nd).clamp(min=0)].float() / 255.0  # (m, B, 3, S, S)
                x = torch.where(is_d.view(1, -1, 1, 1, 1), xd.unsqueeze(0), xo)
                y = torch.where(is_d.unsqueeze(0), self.d_y[idx.clamp(max=nd - 1)].unsqueeze(0), own_y[:, (idx - nd).clamp(min=0)])
                x = random_flip(x.transpose(0, 1), gen).transpose(0, 1)
                x = random_shift(x, sc.fr_shift, gen)
                with _autocast(dev):
                    logits = net(x)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum") / len(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # sum over models: each model's gradient is its own mean loss
                opt.step()
                if sched is not None:
                    sched.step()
            val, tgt = self._evaluate(net, test)
            for k in range(m):
                if val[k] >= best_val[k]:  # >=: among equal validation, the later (more trained) epoch
                    best_val[k] = val[k]
                    best[k] = {"acc": float(tgt[k]), "val_acc": float(val[k]), "epoch": epoch + 1}
                    since[k] = 0
                else:
                    since[k] += 1
            if bool((since >= sc.fr_patience).all()):
                break
        for k in range(m):
            best[k]["acc_last"] = float(tgt[k])
            best[k]["epochs_run"] = epoch + 1
        return best

    @torch.no_grad()
    def _evaluate(self, net: ResNetBank, tests: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        net.eval()
        m, dev = net.m, self.device
        correct = torch.zeros(m)
        for s in range(0, len(self.v_x), 256):
            x = (self.v_x[s:s + 256].float() / 255.0).unsqueeze(0).expand(m, -1, -1, -1, -1)
            with _autocast(dev):
                pred = net(x).argmax(-1)
            correct += (pred == self.v_y[s:s + 256]).sum(1).float().cpu()
        val = correct / max(1, len(self.v_x))
        n_t = max(len(t) for t in tests)
        xt = torch.stack([torch.cat([t, t[:1].expand(n_t - len(t), -1, -1, -1)]) for t in tests]).to(dev)
        with _autocast(dev):
            pred = net(xt.float() / 255.0).argmax(-1).cpu()  # (m, n_t)
        tgt = torch.tensor([(pred[k, :len(t)] == self.n_cls - 1).float().mean() for k, t in enumerate(tests)])
        return val, tgt


class CentroidAttacker:
    """Frozen embedder + nearest class centroid over distractors and the target (cosine)."""

    def __init__(self, embedder, distractor_train, targets) -> None:
        self.embedder, self.name = embedder, embedder.name
        e = embedder.embed(distractor_train.float())
        n_d = len(distractor_train.classes)
        self.d_sum = torch.zeros(n_d, e.shape[1]).index_add_(0, distractor_train.labels, e)  # (D, 128)
        self.d_cnt = torch.bincount(distractor_train.labels, minlength=n_d).float()
        self.test_emb = [embedder.embed(t.test.float() / 255.0) for t in targets]
        self.n_d = n_d

    def run(self, jobs: list[Job]) -> list[dict]:
        out = []
        for j in jobs:
            s, c = self.d_sum.clone(), self.d_cnt.clone()
            et = self.embedder.embed(as_float(j.target_train))
            tgt = et.sum(0, keepdim=True)
            if j.extra is not None:
                ee = self.embedder.embed(as_float(j.extra))
                lab = j.extra_labels
                dmask = lab < self.n_d
                s.index_add_(0, lab[dmask], ee[dmask])
                c += torch.bincount(lab[dmask], minlength=self.n_d).float()
                tgt = tgt + ee[~dmask].sum(0, keepdim=True)
            cent = F.normalize(torch.cat([s / c.clamp_min(1)[:, None], tgt]), dim=1)  # (D+1, 128)
            pred = (self.test_emb[j.user] @ cent.T).argmax(1)
            out.append({"acc": float((pred == self.n_d).float().mean())})
        return out
