"""E1 (static system), E2 (protection without attack, per user), E7 (upload robustness)."""

from __future__ import annotations


import torch

from . import plots
from .counters import jpeg, resize
from .fr import Job
from .stats import summary

ACC_NOTE = "accuracy on the target's clean test faces"


def per_attacker(ctx, results: list[dict], label: str) -> dict:
    """{attacker: summary over users} for one condition."""
    return {a: summary([r.get(a) for r in results]) for a in ctx.attacker_names()}


def compare_rows(ctx, conditions: dict[str, list[dict]], thesis: dict[str, str]) -> list[dict]:
    rows = []
    for cond, res in conditions.items():
        for a, s in per_attacker(ctx, res, cond).items():
            rows.append({"quantity": cond, "attacker": a, "ours": s, "thesis": thesis.get(cond, "–") if a == "resnet18" else "–"})
    return rows


def user_rows(ctx, conditions: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for u, t in enumerate(ctx.data.targets):
        row = {"user": t.name}
        for cond, res in conditions.items():
            if u < len(res):
                for a in ctx.attacker_names():
                    row[f"{cond} · {a}"] = res[u].get(a)
        rows.append(row)
    return rows


def bars(ctx, name: str, conditions: dict[str, list[dict]], title: str, thesis: list[float | None]) -> str:
    series = {a: [(s["mean"], s["sd"]) for s in (per_attacker(ctx, res, c)[a] for c, res in conditions.items())]
              for a in ctx.attacker_names()}
    fn = f"{name}_accuracy.png"
    (ctx.out / name).mkdir(parents=True, exist_ok=True)
    plots.accuracy_bars(ctx.out / name / fn, list(conditions), series, title, thesis)
    return fn


def run_e1(ctx) -> dict:
    """Static system: one MaskNet for everyone; the attacker holds it and trains an InvNet."""
    loaded = ctx.source("static")
    spec = loaded.spec
    params = ctx.nets(loaded, 1, ctx.seed + 11)
    inv = ctx.invnet(spec, params, [0], ctx.seed + 12)
    prot, rest = [], []
    for t in ctx.data.targets:
        p = ctx.protect(spec, params, 0, t.train)
        prot.append(p)
        rest.append(ctx.restore(inv, p))
    base = ctx.baseline()
    r_prot = ctx.attack([Job(u, p) for u, p in enumerate(prot)])
    r_rest = ctx.attack([Job(u, p) for u, p in enumerate(rest)])
    conds = {"original": base, "protected": r_prot, "restored (InvNet)": r_rest}
    orig = torch.cat([t.train for t in ctx.data.targets])
    quality = {"protected": ctx.quality(orig, torch.cat(prot)), "restored": ctx.quality(orig, torch.cat(rest))}
    (ctx.out / "e1").mkdir(parents=True, exist_ok=True)
    t0 = ctx.data.targets[0]
    grid = plots.face_grid(ctx.out / "e1" / "e1_faces.png", {
        "original": t0.train.float() / 255, "protected": prot[0], "restored": rest[0],
        "|δ| x10": ((prot[0] - t0.train.float() / 255).abs() * 10)}, f"E1 static MaskNet, user {t0.name}")
    return {
        "title": "static system — original / protected / restored (thesis Fig 5.1)",
        "protocol": "The PSP trains ONE MaskNet (method=static) shared by every user. The attacker runs it on its "
                    "public faces and trains an InvNet; the target's 25 uploads are protected, or protected then "
                    "restored, before the attacker trains its FR model; it is tested on the target's clean faces.",
        "comparison": compare_rows(ctx, conds, {"original": "0.82 (max 0.941)", "protected": "0.02 (max 0.059)",
                                                "restored (InvNet)": "0.81 (max 0.826)"}),
        "tables": {"Per target user": user_rows(ctx, conds)},
        "quality": quality,
        "raw": {k: v for k, v in conds.items()},
        "plots": [bars(ctx, "e1", conds, "E1 static system", [0.82, 0.02, 0.81]), grid.name],
        "findings": _findings_e1(ctx, conds),
    }


def _findings_e1(ctx, conds) -> list[str]:
    out = []
    for a in ctx.attacker_names():
        s = {c: summary([r.get(a) for r in res])["mean"] for c, res in conds.items()}
        if None in s.values():
            continue
        o, p, r = s["original"], s["protected"], s["restored (InvNet)"]
        out.append(f"{a}: original {o:.3f} -> protected {p:.3f} -> restored {r:.3f}: protection "
                   f"{'holds' if p < 0.5 * o else 'does NOT hold'} without attack; the InvNet "
                   f"{'recovers' if r > p + 0.5 * (o - p) else 'does not recover'} most of the accuracy.")
    return out


def user_nets(ctx, n_users: int):
    """The HyperNet and one issued MaskNet per target user (user u gets net u)."""
    loaded = ctx.source("hypernet")
    return loaded, ctx.nets(loaded, n_users, ctx.seed + 21)


def run_e2(ctx) -> dict:
    loaded, params = user_nets(ctx, len(ctx.data.targets))
    prot = [ctx.protect(loaded.spec, params, u, t.train) for u, t in enumerate(ctx.data.targets)]
    base = ctx.baseline()
    r_prot = ctx.attack([Job(u, p) for u, p in enumerate(prot)])
    conds = {"original": base, "protected (own HyperNet MaskNet)": r_prot}
    orig = torch.cat([t.train for t in ctx.data.targets])
    (ctx.out / "e2").mkdir(parents=True, exist_ok=True)
    t0 = ctx.data.targets[0]
    grid = plots.face_grid(ctx.out / "e2" / "e2_faces.png", {
        "original": t0.train.float() / 255, "protected": prot[0],
        "|δ| x10": (prot[0] - t0.train.float() / 255).abs() * 10}, f"E2 HyperNet MaskNet of user {t0.name}")
    return {
        "title": "protection without attack, per target user (thesis Table 5.1)",
        "protocol": "Each target user gets their own MaskNet from the HyperNet; the attacker trains its FR model "
                    "on the user's protected uploads (no inversion) and is tested on clean faces.",
        "comparison": compare_rows(ctx, conds, {"original": "0.804–0.825 (5 users)",
                                                "protected (own HyperNet MaskNet)": "0.018–0.133 (mean 0.073)"}),
        "tables": {"Per target user (thesis Table 5.1 layout)": user_rows(ctx, conds)},
        "quality": {"protected": ctx.quality(orig, torch.cat(prot))},
        "raw": conds,
        "plots": [bars(ctx, "e2", conds, "E2 protection without attack", [0.82, 0.073]), grid.name],
    }


def upload_transforms(scale) -> dict:
    return {"none": lambda x: x, "jpeg q90": lambda x: jpeg(x, 90), "jpeg q75": lambda x: jpeg(x, 75),
            f"resize x{scale.e7_resize:g}": lambda x: resize(x, scale.e7_resize)}


def run_e7(ctx) -> dict:
    loaded, params = user_nets(ctx, len(ctx.data.targets))
    targets = ctx.data.targets
    prot = [ctx.protect(loaded.spec, params, u, t.train) for u, t in enumerate(targets)]
    clean = [t.train.float() / 255.0 for t in targets]
    conds, controls, quality, kept = {}, {}, {}, []
    orig = torch.cat(clean)
    for name, fn in upload_transforms(ctx.scale).items():
        up = [fn(p) for p in prot]
        conds[f"protected, {name}"] = ctx.attack([Job(u, x) for u, x in enumerate(up)])
        quality[f"protected, {name}"] = ctx.quality(orig, torch.cat(up))
        if name != "none":
            cl = [fn(c) for c in clean]
            # Controls (the transform alone) with the embedding attackers only: the ResNet budget goes
            # to the protected conditions.
            controls[f"clean, {name}"] = ctx.attack([Job(u, x) for u, x in enumerate(cl)], resnet=False)
            # How much of the perturbation survives the upload: |T(x+δ) − T(x)| / |δ| (RMS).
            d_after = torch.cat(up) - torch.cat(cl)
            d_before = torch.cat(prot) - orig
            kept.append({"transform": name, "delta_rms_kept": float(d_after.pow(2).mean().sqrt() / d_before.pow(2).mean().sqrt())})
    all_conds = {"original": ctx.baseline(), **conds, **controls}
    names = list(conds)
    return {
        "title": "upload robustness — JPEG and resizing before the attacker sees the photos",
        "protocol": "Each target's protected uploads (own HyperNet MaskNet, as E2) pass through JPEG q90, q75 or a "
                    f"x{ctx.scale.e7_resize:g} downscale+upscale before the attacker trains on them (no inversion). "
                    "'clean, …' rows are the same transform on unprotected photos (control; embedding attackers only). "
                    "Thesis: not measured.",
        "comparison": compare_rows(ctx, all_conds, {}),
        "tables": {"Per target user": user_rows(ctx, all_conds), "Perturbation surviving the upload": kept},
        "quality": quality,
        "raw": all_conds,
        "plots": [bars(ctx, "e7", {"original": all_conds["original"], **{n: conds[n] for n in names}},
                       "E7 protection after upload transforms", [])],
    }
