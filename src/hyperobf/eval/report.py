"""Write an experiment's results folder: results.json (every number), report.md (our numbers
beside the thesis's), config.json (resolved scale + arguments) and split.json."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from .stats import fmt


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    info["cores"] = os.cpu_count()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _table(rows: list[dict], cols: list[str]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    return "\n".join(out)


_LEAD = ("method", "attacker", "user", "transform", "lambda_div", "alpha", "epochs")


def _columns(row: dict) -> list[str]:
    """Identifying columns first (results.json may hold the keys sorted), the rest as given."""
    return [k for k in _LEAD if k in row] + [k for k in row if k not in _LEAD]


def _cell(v) -> str:
    if isinstance(v, dict):
        return fmt(v)
    if isinstance(v, float):
        return f"{v:.3f}" if v == 0 or abs(v) >= 0.01 else f"{v:.1e}"  # α = 1e-4 must not print as 0.000
    return "–" if v is None else str(v)


def write_results(ctx, name: str, result: dict) -> Path:
    """Writes <out>/<name>/{results.json, report.md, config.json, split.json}; returns the folder."""
    folder = ctx.out / name
    folder.mkdir(parents=True, exist_ok=True)
    config = {"experiment": name, "scale": ctx.scale.to_dict(), "seed": ctx.seed, "device": str(ctx.device),
              "psp_overrides": dict(ctx.psp_overrides),
              "faces_root": str(ctx.faces_root), "models_root": str(ctx.models_root) if ctx.models_root else None,
              "sources": ctx.sources, "machine": machine()}
    ctx.write_json(f"{name}/config.json", config)
    ctx.write_json(f"{name}/split.json", ctx.split)
    payload = {"config": config, "split_summary": split_summary(ctx.split), "timings_s": dict(ctx.timings), **result}
    ctx.write_json(f"{name}/results.json", payload)
    tmp = folder / ".report.md.tmp"  # whole file or nothing
    tmp.write_text(render(name, payload))
    tmp.replace(folder / "report.md")
    return folder


def split_summary(split: dict) -> dict:
    return {"seed": split["seed"], "fr_source": split["fr_source"], "targets": list(split["targets"]),
            "n_distractors": len(split["distractors"]),
            "train_per_class": len(next(iter(split["distractors"].values()))["train"]),
            "test_per_target": {t: len(v["test"]) for t, v in split["targets"].items()},
            "public": {"source": split["public_source"], "images": len(split["public"]["files"]),
                       "identities": split["public"]["identities"], "pretrain_ids": len(split["public"]["pretrain_ids"])},
            "psp": {"source": split["psp_source"], "identities": len(split["psp"]["identities"]),
                    "images": split["psp"]["images"]}}


def render(name: str, r: dict) -> str:
    sc = r["config"]["scale"]
    s = r["split_summary"]
    lines = [f"# {name.upper()}: {r['title']}", ""]
    lines += [f"Scale **{sc['name']}** — {sc['notes']}", "",
              f"Device {r['config']['device']} ({r['config']['machine'].get('gpu') or r['config']['machine'].get('cpu')}), "
              f"seed {r['config']['seed']}, {r.get('seconds', 0):.0f} s.", "",
              f"Split: FR set from `{s['fr_source']}`: {len(s['targets'])} target users + {s['n_distractors']} "
              f"distractor classes, {s['train_per_class']} training images per class, "
              f"{min(s['test_per_target'].values())}–{max(s['test_per_target'].values())} clean test images per target; "
              f"attacker's public set: {s['public']['images']} images of {s['public']['identities']} identities "
              f"from `{s['public']['source']}` ({s['public']['pretrain_ids']} pre-train the ResNet trunk); PSP training: "
              f"{s['psp']['images']} images of {s['psp']['identities']} identities from `{s['psp']['source']}`. "
              f"Identities are disjoint across the three (full list in split.json).", ""]
    if r["config"].get("psp_overrides"):  # --psp-set: these replace the scale's PSP training settings above
        lines += ["PSP training settings replaced with `--psp-set`: " + ", ".join(
            f"{k} = {v}" for k, v in sorted(r["config"]["psp_overrides"].items())) + ".", ""]
    if r.get("protocol"):
        lines += [r["protocol"], ""]
    lines += ["## Our numbers beside the thesis's", "",
              "Accuracy = share of the target's clean test faces the attacker labels as the target "
              "(lower = better protection). ± is the sample sd over target users (or cells).", ""]
    lines.append(_table(r["comparison"], ["quantity", "attacker", "ours", "thesis"]))
    lines.append("")
    if r.get("quality"):
        lines += ["## Image quality (protected vs original)", ""]
        lines.append(_table([{"images": k, **v} for k, v in r["quality"].items()],
                            ["images", "dssim", "ssim", "psnr", "max_abs_delta"]))
        lines.append("")
    for title, table in r.get("tables", {}).items():
        if table:
            lines += [f"## {title}", "", _table(table, _columns(table[0])), ""]
    if r.get("skipped"):
        lines += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in r["skipped"].items()] + [""]
    if r.get("findings"):
        lines += ["## Reading", ""] + [f"- {f}" for f in r["findings"]] + [""]
    for p in r.get("plots", []):
        lines += [f"![{p}]({p})", ""]
        if p.endswith("_faces.png"):  # .gitignore keeps it out of the repository
            lines += [f"(`{p}` shows real faces from the data folder, whose terms forbid redistribution: it is "
                      "written beside this report by every run and never committed.)", ""]
    lines += ["Every number is in results.json; resolved config in config.json; split in split.json.", ""]
    return "\n".join(lines)


def write_index(out: Path, summaries: list[dict]) -> Path:
    """A top-level report.md linking each experiment's report with its headline rows."""
    lines = ["# HyperObf evaluation", ""]
    for s in summaries:
        lines += [f"## [{s['name'].upper()}: {s['title']}]({s['name']}/report.md)", "",
                  _table(s["comparison"], ["quantity", "attacker", "ours", "thesis"]), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    (out / "summary.json").write_text(json.dumps(summaries, indent=2, default=str))
    return path
