"""Does a trained source protect? A frozen-embedder nearest-centroid attacker on real faces.

Every query identity is one user with its own net (``source.issue(z)``, z seeded). The attacker
embeds clean gallery faces with a frozen embedder Φ, keeps one centroid per identity, and
labels each query by the most similar centroid. Reported per group of identities:
* ``seen``: identities the source was trained on; queries are exactly the training run's
  held-out images (rebuilt from the checkpoint's config), gallery = their training images;
* ``unseen``: identities in the folder the source never saw; their images split into gallery
  and queries — the deployment case (new users).
Targeted checkpoints (feature objective, targeted): each user's target is the anchor identity
its z maps to; as in Fawkes, whose target is chosen far from the user, a user's z is drawn until
its anchor lies in the farther half of the pool as seen from the user's gallery centroid. Reported
too: cos to the anchor before/after, and how often the attacker labels a protected query as the
anchor identity (``to_anchor``).
Protected queries are rounded to 8 bits (as a saved PNG) and optionally JPEG-coded with a real
codec (Pillow) before the attack. Metrics: identification accuracy on clean vs protected
queries, cos(Φ(x), Φ(x ⊕ δ)), DSSIM and PSNR of the protected queries.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..eval.counters import jpeg
from ..models.masknet import apply_batched
from .data import FaceSet, load_image_folder
from .feature import embed_all, identity_centroids, load_embedder
from .losses import dssim, psnr


def _take(faces: FaceSet, label: int, limit: int) -> torch.Tensor:
    return faces.images[faces.labels == label][:limit]


def split_gallery_queries(loaded, data: str | Path, seed: int, max_identities: int, max_query: int,
                          max_gallery: int) -> tuple[FaceSet, FaceSet, torch.Tensor]:
    """(gallery, queries, query_is_seen) with one shared class list: trained identities first."""
    from .data import split_holdout

    cfg = loaded.config
    parts: list[tuple[str, torch.Tensor, torch.Tensor, bool]] = []  # (name, gallery imgs, query imgs, seen)
    seen_names: list[str] = []
    if cfg.data:  # rebuild the training run's split from this folder, with the run's own limits
        trained = load_image_folder(data, cfg.image_size, cfg.max_identities, cfg.max_per_identity)
        if list(loaded.payload.get("classes", trained.classes)) != trained.classes:
            raise ValueError(f"{data} does not hold the identities this checkpoint was trained on")
        tr, ho = split_holdout(trained, cfg.holdout_fraction, cfg.seed)
        seen_names = trained.classes
        for c, name in enumerate(trained.classes):
            parts.append((name, _take(tr, c, max_gallery), _take(ho, c, max_query), True))
    everyone = load_image_folder(data, cfg.image_size, max_identities=max_identities)
    g = torch.Generator().manual_seed(seed)
    for c, name in enumerate(everyone.classes):
        if name in seen_names:
            continue
        imgs = everyone.images[everyone.labels == c]
        imgs = imgs[torch.randperm(len(imgs), generator=g)]
        half = len(imgs) // 2
        parts.append((name, imgs[:half][:max_gallery], imgs[half:][:max_query], False))
    if max_identities:
        parts = parts[:max_identities]
    parts = [p for p in parts if len(p[1]) and len(p[2])]
    if not parts:
        raise ValueError(f"no identity in {data} has both gallery and query images")
    names = [p[0] for p in parts]

    def build(col: int) -> FaceSet:
        imgs = torch.cat([p[col] for p in parts])
        labels = torch.cat([torch.full((len(p[col]),), i, dtype=torch.int64) for i, p in enumerate(parts)])
        return FaceSet(imgs, labels, names)

    queries = build(2)
    seen = torch.cat([torch.full((len(p[2]),), p[3]) for p in parts])
    return build(1), queries, seen


def user_latents(source, n_users: int, seed: int, target=None, centroids: torch.Tensor | None = None,
                 own_slot: torch.Tensor | None = None, tries: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One seeded z per user (n_users, z_dim); with ``target`` = (anchors (K, D), anchor_proj), the users'
    centroids (n_users, D) and each user's own slot in the pool (-1: not in it): each z is redrawn until
    its anchor is in the user's farther half of the pool -> (z, slots)."""
    from .feature import anchor_index

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_users, source.z_dim, generator=g)
    if target is None:
        return z, None
    anchors, proj = target
    sim = (centroids @ anchors.T).cpu()  # (n_users, K)
    slots = torch.empty(n_users, dtype=torch.int64)
    for u in range(n_users):
        mine = int(own_slot[u]) if own_slot is not None else -1
        others = torch.cat([sim[u, :mine], sim[u, mine + 1:]]) if mine >= 0 else sim[u]
        limit = others.quantile(0.5, interpolation="lower")
        if mine >= 0:
            sim[u, mine] = float("inf")  # never one's own identity
        for _ in range(tries):
            k = int(anchor_index(source.key_of(z[u:u + 1]), proj)[0])
            if sim[u, k] <= limit:
                break
            z[u] = torch.randn(source.z_dim, generator=g)
        slots[u] = k
    return z, slots


@torch.no_grad()
def protect_per_identity(source, spec, queries: FaceSet, seed: int, device,
                         z: torch.Tensor | None = None) -> torch.Tensor:
    """Each identity of ``queries`` is one user with net ``source.issue(z_c)``: -> (N, 3, H, W) uint8."""
    classes = queries.labels.unique().tolist()
    if z is None:
        z = torch.randn(max(classes) + 1, source.z_dim, generator=torch.Generator().manual_seed(seed))
    out = torch.empty_like(queries.images)
    for c in classes:
        idx = (queries.labels == c).nonzero().squeeze(1)
        params = source.issue(z[c:c + 1])
        x = queries.float(idx).to(device)
        y = apply_batched(spec, {k: v.to(device) for k, v in params.items()}, x.unsqueeze(0))[0]
        out[idx] = (y * 255.0).round().clamp(0, 255).to(torch.uint8).cpu()
    return out


def _nearest(emb: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return (emb @ centroids.T).argmax(1)


@torch.no_grad()
def protection_check(
    checkpoint: str | Path, data: str | Path, embedder: str | Path, *, max_identities: int = 0,
    max_query: int = 20, max_gallery: int = 40, seed: int = 0, jpeg_quality: tuple[int, ...] = (),
    device: str = "cpu",
) -> dict:
    """Attack a trained checkpoint's protection; returns a JSON-ready report (see module doc)."""
    from .checkpoint import load_checkpoint

    dev = torch.device(device)
    loaded = load_checkpoint(checkpoint)
    source = loaded.source.to(dev).eval()
    spec = loaded.spec
    gallery, queries, seen = split_gallery_queries(loaded, data, seed, max_identities, max_query, max_gallery)
    phi = load_embedder(embedder).to(dev)
    n_cls = len(gallery.classes)
    cent = identity_centroids(embed_all(phi, gallery.float().to(dev)), gallery.labels.to(dev), n_cls)
    x_clean = queries.float().to(dev)
    e_clean = embed_all(phi, x_clean)
    obj_state = loaded.payload.get("objective") or {}
    targeted = loaded.config.objective == "feature" and loaded.config.feature_mode == "targeted" \
        and getattr(obj_state.get("anchor_proj"), "numel", lambda: 0)()
    target = (obj_state["anchors"].to(dev), obj_state["anchor_proj"]) if targeted else None
    pool = list(loaded.payload.get("classes") or [])  # anchor slot k = training identity pool[k]
    own = torch.tensor([pool.index(c) if c in pool else -1 for c in gallery.classes])
    z, slots = user_latents(source, n_cls, seed + 1, target, cent, own)
    prot = protect_per_identity(source, spec, queries, seed + 1, dev, z=z)
    x_prot = prot.float().to(dev) / 255.0
    e_prot = embed_all(phi, x_prot)
    labels = queries.labels.to(dev)
    d = torch.cat([dssim(x_prot[i:i + 64], x_clean[i:i + 64]) for i in range(0, len(x_prot), 64)])
    p = torch.cat([psnr(x_prot[i:i + 64], x_clean[i:i + 64]) for i in range(0, len(x_prot), 64)])
    cos = (e_clean * e_prot).sum(1)
    hit_clean = _nearest(e_clean, cent) == labels
    hit_prot = _nearest(e_prot, cent) == labels
    extra = {}
    for q in jpeg_quality:
        e_j = embed_all(phi, jpeg(prot.float() / 255.0, q).to(dev))  # prot: 8-bit, so exact
        extra[q] = _nearest(e_j, cent) == labels
    if target is not None:  # per query: its user's anchor embedding, and the gallery class of that anchor
        a = target[0][slots.to(dev)[labels]]  # (N, D)
        cos_anchor_clean, cos_anchor_prot = (e_clean * a).sum(1), (e_prot * a).sum(1)
        slot_cls = torch.tensor([gallery.classes.index(pool[k]) if pool[k] in gallery.classes else -1
                                 for k in range(len(pool))], device=dev)  # anchor slot -> gallery class
        anchor_cls = slot_cls[slots.to(dev)[labels]]
        to_anchor = _nearest(e_prot, cent) == anchor_cls
    groups = {"all": torch.ones_like(seen, dtype=torch.bool), "seen": seen, "unseen": ~seen}
    report: dict = {
        "checkpoint": str(checkpoint), "structure": spec.name, "method": loaded.config.method,
        "objective": loaded.config.objective, "feature_mode": loaded.config.feature_mode,
        "identities": n_cls, "gallery_images": len(gallery), "query_images": len(queries),
        "rho_pixel": spec.rho_pixel, "groups": {},
    }
    for name, mask in groups.items():
        m = mask.to(dev)
        if not bool(m.any()):
            continue
        row = {
            "queries": int(m.sum()), "identities": int(labels[m].unique().numel()),
            "acc_clean": float(hit_clean[m].float().mean()), "acc_protected": float(hit_prot[m].float().mean()),
            "cos_mean": float(cos[m].mean()), "cos_min": float(cos[m].min()),
            "dssim_mean": float(d[m].mean()), "dssim_max": float(d[m].max()), "psnr_mean": float(p[m].mean()),
        }
        if target is not None:
            row["anchor_cos_clean"] = float(cos_anchor_clean[m].mean())
            row["anchor_cos_protected"] = float(cos_anchor_prot[m].mean())
            row["to_anchor"] = float(to_anchor[m].float().mean())
        for q, hits in extra.items():
            row[f"acc_protected_jpeg{q}"] = float(hits[m].float().mean())
        report["groups"][name] = row
    return report


def record_entries(report: dict, data: str | Path, embedder: str | Path, command: str) -> list[dict]:
    """The report as protection-record entries (:mod:`hyperobf.protection`): one per group of
    identities (seen in training / unseen), each also after every JPEG round trip measured."""
    from ..protection import entry

    out = []
    attacker = f"{Path(embedder).stem} nearest-centroid"
    for name, g in report["groups"].items():
        if name == "all" and len(report["groups"]) > 1:
            continue  # the seen / unseen groups are recorded; "all" would repeat them
        who = {"seen": "identities the HyperNet trained on", "unseen": "new users", "all": "all users"}[name]
        data_desc = f"{Path(data).name}, {g['identities']} {who}, {g['queries']} queries"
        variants = [("protected queries vs clean gallery", g["acc_protected"])]
        variants += [(f"protected queries after JPEG q{k[len('acc_protected_jpeg'):]} vs clean gallery", v)
                     for k, v in g.items() if k.startswith("acc_protected_jpeg")]
        for protocol, acc in variants:
            out.append(entry(attacker, protocol, data_desc, g["acc_clean"], acc, g["dssim_mean"], g["dssim_max"],
                             g["queries"], g["identities"], command, cos_mean=g["cos_mean"]))
    return out

