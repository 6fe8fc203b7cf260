"""Inversion attacks on dynamic systems: E3 mix-inversion matrix (HyperNet vs ensemble vs
MC-dropout), E4 attacker holding 1/2/3 MaskNets, E5 cross-structure inversion, E8 adaptive FR."""

from __future__ import annotations

import random
import warnings

import numpy as np
import torch

from . import plots
from .exp_protect import per_attacker
from .fr import Job, to_u8
from .stats import summary

E3_THESIS = {"hypernet": ("0.383", "0.024", "(0.13, 0.49)"), "ensemble": ("0.611", "0.116", "(0.36, 0.79)"),
             "mcdropout": ("0.586", "0.018", "(0.31, 0.76)")}


def _users(ctx) -> list[int]:
    return list(range(min(ctx.scale.mix_users, len(ctx.data.targets))))


def _cells_for_resnet(k: int, n: int, rng: random.Random) -> set[tuple[int, int]]:
    """All cells when n == 0, else n off-diagonal cells and n // 4 (>= 1) diagonal ones at random."""
    if n == 0:
        return {(i, j) for i in range(k) for j in range(k)}
    off = [(i, j) for i in range(k) for j in range(k) if i != j]
    diag = [(i, i) for i in range(k)]
    return set(rng.sample(off, min(n, len(off)))) | set(rng.sample(diag, min(len(diag), max(1, n // 4))))


def mix_matrix(ctx, loaded, params, invnets: list, users: list[int], rng: random.Random) -> dict:
    """Every (protecting net i, InvNet j) cell for every user; {attacker: (users, K, K) array}."""
    spec, k = loaded.spec, len(invnets)
    jobs, mask, keys = [], [], []
    for u in users:
        t = ctx.data.targets[u]
        rn = _cells_for_resnet(k, ctx.scale.resnet_cells, rng)
        for i in range(k):
            p = ctx.protect(spec, params, i, t.train)
            for j in range(k):
                jobs.append(Job(u, to_u8(ctx.restore(invnets[j], p))))
                mask.append((i, j) in rn)
                keys.append((users.index(u), i, j))
    res = ctx.attack(jobs, mask)
    out = {}
    for a in ctx.attacker_names():
        m = np.full((len(users), k, k), np.nan)
        for (ui, i, j), r in zip(keys, res):
            if a in r:
                m[ui, i, j] = r[a]
        out[a] = m
    return out


def _off_diag(m: np.ndarray) -> np.ndarray:
    k = m.shape[-1]
    return m[..., ~np.eye(k, dtype=bool)]


def run_e3(ctx) -> dict:
    k, users = ctx.scale.mix_nets, _users(ctx)
    rng = random.Random(ctx.seed + 31)
    rows, tables, mats, skipped, raw, quality = [], {}, {}, {}, {}, {}
    per_user = []
    for method in ("hypernet", "ensemble", "mcdropout"):
        try:
            loaded = ctx.source(method)
        except (ImportError, ModuleNotFoundError, ValueError, NotImplementedError) as e:
            skipped[method] = f"PSP source unavailable: {type(e).__name__}: {e}"
            continue
        params = ctx.nets(loaded, k, ctx.seed + 32)
        invnets = [ctx.invnet(loaded.spec, params, [j], ctx.seed + 100 + j) for j in range(k)]
        m = mix_matrix(ctx, loaded, params, invnets, users, rng)
        raw[method] = {a: v.tolist() for a, v in m.items()}
        orig = torch.cat([ctx.data.targets[u].train for u in users])
        prot = torch.cat([ctx.protect(loaded.spec, params, i % k, ctx.data.targets[u].train)
                          for i, u in enumerate(users)])
        quality[method] = ctx.quality(orig, prot)
        for a, arr in m.items():
            off = summary(_off_diag(arr).ravel())
            with np.errstate(all="ignore"), warnings.catch_warnings():  # cells no ResNet ran on: NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                cell_mean_mat = np.nanmean(arr, 0)
            cell_means = summary(_off_diag(cell_mean_mat).ravel())
            th = E3_THESIS[method] if a == "resnet18" else ("–", "–", "–")
            rows.append({"quantity": f"{method}: off-diagonal mix-inversion", "attacker": a, "ours": off,
                         "thesis": th[0] if a == "resnet18" else "–"})
            rows.append({"quantity": f"{method}: off-diagonal variance / range (cell means)", "attacker": a,
                         "ours": (f"{cell_means['var']:.3f} / ({cell_means['min']:.2f}, {cell_means['max']:.2f})"
                                  if cell_means["n"] else "–"), "thesis": f"{th[1]} / {th[2]}"})
            rows.append({"quantity": f"{method}: diagonal (InvNet of the user's own net)", "attacker": a,
                         "ours": summary(np.diagonal(arr, axis1=1, axis2=2).ravel()), "thesis": "–"})
            mats[f"{method} · {a}"] = cell_mean_mat
            for ui, u in enumerate(users):
                per_user.append({"method": method, "attacker": a, "user": ctx.data.targets[u].name,
                                 "off-diagonal mean": summary(_off_diag(arr[ui]).ravel())["mean"],
                                 "diagonal mean": summary(np.diagonal(arr[ui]).ravel())["mean"]})
    base = ctx.baseline()
    for a, s in per_attacker(ctx, [base[u] for u in users], "original").items():
        rows.insert(0, {"quantity": "original (clean uploads)", "attacker": a, "ours": s, "thesis": "~0.82" if a == "resnet18" else "–"})
    tables["Per user (mean over cells)"] = per_user
    (ctx.out / "e3").mkdir(parents=True, exist_ok=True)
    plot_names = []
    for a in ctx.attacker_names():
        sel = {name.split(" · ")[0]: m for name, m in mats.items() if name.endswith(f"· {a}")}
        if sel:
            fn = f"e3_heatmap_{a}.png"
            plots.heatmaps(ctx.out / "e3" / fn, sel, f"E3 mix-inversion accuracy ({a}; mean over {len(users)} users)")
            plot_names.append(fn)
    return {
        "title": "mix-inversion matrix: HyperNet vs ensemble vs MC-dropout (thesis Fig 5.3, Table 5.2)",
        "protocol": f"Each method issues {k} MaskNets; the attacker trains one InvNet per net on its public faces. "
                    f"Cell (i, j): the target's uploads protected by net i, restored by InvNet j, then FR training. "
                    f"Diagonal = attacker holds the user's own net (impossible in HyperObf); off-diagonal = "
                    f"mix-inversion. {len(users)} target users; embedding attackers score every cell, the ResNet-18 "
                    f"{'every cell' if ctx.scale.resnet_cells == 0 else f'{ctx.scale.resnet_cells} random off-diagonal + {max(1, ctx.scale.resnet_cells // 4)} diagonal cells per user'}.",
        "comparison": rows, "tables": tables, "quality": quality, "skipped": skipped, "raw": raw,
        "plots": plot_names,
    }


def run_e4(ctx) -> dict:
    sc, users = ctx.scale, _users(ctx)
    loaded = ctx.source("hypernet")
    pool = ctx.nets(loaded, sc.e4_pool, ctx.seed + 41)
    rng = random.Random(ctx.seed + 42)
    results = {n: [] for n in sc.held_counts}  # n -> list of (user, draw, {attacker: acc})
    q_orig, q_prot = [], []
    for n in sc.held_counts:
        for r in range(sc.held_draws):
            held = rng.sample(range(sc.e4_pool), n)
            inv = ctx.invnet(loaded.spec, pool, held, ctx.seed + 400 + 10 * n + r)
            free = [i for i in range(sc.e4_pool) if i not in held]
            jobs = []
            for u in users:
                own = rng.choice(free)
                prot = ctx.protect(loaded.spec, pool, own, ctx.data.targets[u].train)
                q_orig.append(ctx.data.targets[u].train)
                q_prot.append(prot)
                jobs.append(Job(u, to_u8(ctx.restore(inv, prot)), tag={"held": held, "own": own}))
            for j, res in zip(jobs, ctx.attack(jobs)):
                results[n].append((j.user, r, res, j.tag))
    thesis = {1: "0.350", 2: "0.55", 3: "0.554"}
    thesis_user = {1: [0.332, 0.341, 0.412, 0.534, 0.132], 2: [0.55, 0.59, 0.58, 0.67, 0.36], 3: [0.56, 0.58, 0.59, 0.68, 0.36]}
    rows, table = [], []
    for n, lst in results.items():
        for a in ctx.attacker_names():
            rows.append({"quantity": f"attacker holds {n} MaskNet{'s' if n > 1 else ''}", "attacker": a,
                         "ours": summary([res.get(a) for _, _, res, _ in lst]),
                         "thesis": thesis.get(n, "–") if a == "resnet18" else "–"})
    for ui, u in enumerate(users):
        row = {"user": ctx.data.targets[u].name}
        for n, lst in results.items():
            for a in ctx.attacker_names():
                row[f"{n} held · {a}"] = summary([res.get(a) for uu, _, res, _ in lst if uu == u])["mean"]
            if ui < 5:
                row[f"{n} held · thesis User{ui + 1}"] = thesis_user.get(n, [None] * 5)[ui]
        table.append(row)
    (ctx.out / "e4").mkdir(parents=True, exist_ok=True)
    series = {a: [(s["mean"], s["sd"]) for s in (summary([res.get(a) for _, _, res, _ in results[n]]) for n in sc.held_counts)]
              for a in ctx.attacker_names()}
    plots.accuracy_bars(ctx.out / "e4" / "e4_accuracy.png", [f"{n} held" for n in sc.held_counts], series,
                        "E4 attacker holding more MaskNets (mix-inversion)", [float(thesis[n]) if n in thesis else None for n in sc.held_counts])
    return {
        "title": "stronger attacker holding 1 / 2 / 3 MaskNets (thesis Table 5.3)",
        "protocol": f"The HyperNet generates {sc.e4_pool} MaskNets in one batch; the attacker holds n of them at random "
                    f"and trains one InvNet on its public faces perturbed by all n; each target user's own net is "
                    f"another one of the batch. {sc.held_draws} random draws per n, {len(users)} users.",
        "comparison": rows, "tables": {"Per target user (thesis Table 5.3 layout)": table},
        "quality": {"protected (users' own nets)": ctx.quality(torch.cat(q_orig), torch.cat(q_prot))},
        "raw": {str(n): [{"user": ctx.data.targets[u].name, "draw": r, **res, **tag} for u, r, res, tag in lst]
                for n, lst in results.items()},
        "plots": ["e4_accuracy.png"],
    }


def run_e5(ctx) -> dict:
    sc, users = ctx.scale, _users(ctx)
    n_prot = 3
    structs, srcs, nets, invs = list(sc.e5_structures), {}, {}, {}
    for s in structs:
        srcs[s] = ctx.source("hypernet", structure=s)
        nets[s] = ctx.nets(srcs[s], 1 + n_prot, ctx.seed + 51)
        invs[s] = ctx.invnet(srcs[s].spec, nets[s], [0], ctx.seed + 52)  # net 0: the attacker's
    quality = {}
    for s in structs:
        orig = torch.cat([ctx.data.targets[u].train for u in users])
        quality[f"structure {s}"] = ctx.quality(orig, torch.cat([ctx.protect(srcs[s].spec, nets[s], 1, ctx.data.targets[u].train)
                                                                 for u in users]))
    jobs, mask, keys = [], [], []
    for si, s in enumerate(structs):  # InvNet structure
        for ti, t in enumerate(structs):  # protecting structure
            for u in users:
                for p in range(1, 1 + n_prot):
                    x = ctx.protect(srcs[t].spec, nets[t], p, ctx.data.targets[u].train)
                    jobs.append(Job(u, to_u8(ctx.restore(invs[s], x))))
                    mask.append(p == 1)
                    keys.append((si, ti))
    res = ctx.attack(jobs, mask)
    mats, rows = {}, []
    for a in ctx.attacker_names():
        m = np.full((len(structs), len(structs)), np.nan)
        for si in range(len(structs)):
            for ti in range(len(structs)):
                v = summary([r.get(a) for k, r in zip(keys, res) if k == (si, ti)])["mean"]
                m[si, ti] = np.nan if v is None else v
        mats[a] = m
        off = [r.get(a) for k, r in zip(keys, res) if k[0] != k[1]]
        same = [r.get(a) for k, r in zip(keys, res) if k[0] == k[1]]
        rows.append({"quantity": "cross-structure inversion (InvNet structure ≠ net structure)", "attacker": a,
                     "ours": summary(off), "thesis": "0.2–0.4" if a == "resnet18" else "–"})
        rows.append({"quantity": "same structure, other net (mix-inversion)", "attacker": a, "ours": summary(same), "thesis": "–"})
    (ctx.out / "e5").mkdir(parents=True, exist_ok=True)
    plots.heatmaps(ctx.out / "e5" / "e5_heatmap.png", mats, "E5 InvNet structure (row) vs protecting structure (col)",
                   xlabel="target protected by structure", ylabel="InvNet trained on structure", ticks=structs)
    return {
        "title": "three HyperNets, cross-structure inversion (thesis Fig 5.8)",
        "protocol": f"One HyperNet per structure {structs}; the attacker trains one InvNet per structure on one of its "
                    f"nets and restores uploads protected by {n_prot} other nets of every structure. ResNet-18 on one "
                    f"protecting net per cell, embedders on all.",
        "comparison": rows, "tables": {}, "quality": quality, "raw": {a: m.tolist() for a, m in mats.items()},
        "plots": ["e5_heatmap.png"],
    }


def run_e8(ctx) -> dict:
    sc, users = ctx.scale, _users(ctx)
    loaded = ctx.source("hypernet")
    pool = ctx.nets(loaded, sc.e4_pool, ctx.seed + 81)
    rng = random.Random(ctx.seed + 82)
    n = max(sc.held_counts)
    d = ctx.data.distractor_train
    plain, adaptive, q_orig, q_prot = [], [], [], []
    for r in range(sc.held_draws):
        held = rng.sample(range(sc.e4_pool), n)
        inv = ctx.invnet(loaded.spec, pool, held, ctx.seed + 800 + r)
        # The attacker's augmentation: its distractor faces protected by its held nets, and restored.
        which = torch.tensor([held[i % n] for i in range(len(d))])
        d_prot = torch.cat([ctx.protect(loaded.spec, pool, int(h), d.images[which == h]) for h in held])
        d_lab = torch.cat([d.labels[which == h] for h in held])
        d_rest = ctx.restore(inv, d_prot)
        free = [i for i in range(sc.e4_pool) if i not in held]
        jp, ja = [], []
        for u in users:
            own = rng.choice(free)
            prot = ctx.protect(loaded.spec, pool, own, ctx.data.targets[u].train)
            rest = ctx.restore(inv, prot)
            q_orig.append(ctx.data.targets[u].train)
            q_prot.append(prot)
            jp.append(Job(u, to_u8(rest)))
            tgt = torch.full((len(prot),), len(d.classes), dtype=torch.int64)
            ja.append(Job(u, to_u8(rest), extra=torch.cat([to_u8(prot), to_u8(d_prot), to_u8(d_rest)]),
                          extra_labels=torch.cat([tgt, d_lab, d_lab])))
        plain += ctx.attack(jp)
        adaptive += ctx.attack(ja)
    conds = {f"InvNet restore ({n} held), plain FR": plain, "InvNet restore + adaptive FR training": adaptive}
    rows = []
    for c, res in conds.items():
        for a, s in per_attacker(ctx, res, c).items():
            rows.append({"quantity": c, "attacker": a, "ours": s, "thesis": "–"})
    series = {a: [(s["mean"], s["sd"]) for s in (per_attacker(ctx, res, c)[a] for c, res in conds.items())]
              for a in ctx.attacker_names()}
    (ctx.out / "e8").mkdir(parents=True, exist_ok=True)
    plots.accuracy_bars(ctx.out / "e8" / "e8_accuracy.png", ["plain", "adaptive"], series, "E8 adaptive attacker", [])
    return {
        "title": "adaptive attacker: FR trained with protected and restored images of the nets it holds",
        "protocol": f"The attacker holds {n} of {sc.e4_pool} HyperNet MaskNets and trains an InvNet on them. Plain: FR "
                    f"trained on the target's restored uploads. Adaptive: additionally on the target's protected "
                    f"uploads and on its distractor faces protected by its held nets and restored, so the model "
                    f"learns to ignore the perturbation. {sc.held_draws} draws x {len(users)} users. Thesis: not measured.",
        "comparison": rows, "tables": {}, "raw": conds, "plots": ["e8_accuracy.png"],
        "quality": {"protected (users' own nets)": ctx.quality(torch.cat(q_orig), torch.cat(q_prot))},
    }
