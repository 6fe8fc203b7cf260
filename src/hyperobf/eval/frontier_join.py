"""Joining frontier runs: one table from runs that split its costly rows between processes, and the table's
outputs (frontier.json, report.md, frontier.png). Rows are comparable only on the same split, uploads and
attackers; the first run's clean row heads the table."""

from __future__ import annotations

import json
from pathlib import Path


def _copy_attackers(src: dict, dst: dict, source: str | None = None) -> None:
    """Give row ``dst`` the attackers only ``src`` measured (numbers, per-user values; ``source``: from where)."""
    for k in src["acc"].keys() - dst["acc"].keys():
        dst["acc"][k] = src["acc"][k]
        dst.setdefault("per_user", {})[k] = src.get("per_user", {}).get(k)
        if source is not None:
            dst.setdefault("attackers_from", {})[k] = source


def merge_rows(result: dict, earlier: dict, source: str) -> None:
    """Add an earlier run's rows (not its clean row) to ``result``; ValueError unless it measured the
    same users, uploads and attackers (then its numbers are comparable row for row)."""
    same = {k: (result.get(k), earlier.get(k)) for k in ("targets", "uploads_per_target", "distractors")}
    # the InvNet's settings (inv_*) change only the inversion rows, which carry them (and name them)
    attacker = lambda r: {k: v for k, v in (r.get("scale_overrides") or {}).items() if not k.startswith("inv_")}  # noqa: E731
    same["scale_overrides"] = (attacker(result), attacker(earlier))
    split_a = {k: result["split"].get(k) for k in ("seed", "fr_source", "targets", "distractors")}
    split_b = {k: earlier.get("split", {}).get(k) for k in ("seed", "fr_source", "targets", "distractors")}
    if any(a != b for a, b in same.values()) or split_a != split_b:
        raise ValueError(f"{source}: not the same split, uploads or attackers as this run; cannot join its rows")
    row_a = next(r for r in result["rows"] if r["protector"] == "clean")
    row_b = next(r for r in earlier["rows"] if r["protector"] == "clean")
    clean_a, clean_b = row_a["acc"], row_b["acc"]
    # attackers both clean rows have (a run may leave its costly ResNets off the clean row: --resnet-on)
    if any(abs(clean_a[k]["mean"] - clean_b[k]["mean"]) > 1e-9 for k in clean_a.keys() & clean_b.keys()):
        raise ValueError(f"{source}: its clean level differs from this run's (other attackers' state)")
    missing = set(earlier.get("attackers", ())) - clean_a.keys() - clean_b.keys()
    if missing:
        raise ValueError(f"{source}: no clean level for {', '.join(sorted(missing))} in either run")
    # an attacker only the other run has (e.g. a squeezing ResNet): its clean level joins the table's clean row
    _copy_attackers(row_b, row_a)
    result["attackers"] = sorted(set(result["attackers"]) | set(earlier.get("attackers", ())))
    # a row this table already has (same protector and ρ; e.g. the net row both processes measured) stays
    # the table's own; the other run's copy adds only the attackers this one left off (a squeezing ResNet)
    have = {(r["protector"], r["rho"]): r for r in result["rows"]}
    for r in earlier["rows"]:
        if r["protector"] == "clean":
            continue
        mine = have.get((r["protector"], r["rho"]))
        if mine is None:
            result["rows"].append(dict(r, included_from=source))
            continue
        if abs(mine["dssim_mean"] - r["dssim_mean"]) > 1e-9:
            raise ValueError(f"{source}: its {r['protector']} row at ρ {r['rho']} protected other uploads")
        _copy_attackers(r, mine, source)
        # a measurement of the nets themselves that only the other run made (how alike the users' nets are)
        if r.get("between_users") and not mine.get("between_users"):
            mine["between_users"] = r["between_users"]
    result.setdefault("included", []).append({"source": source, "command": earlier.get("command"),
                                              "seconds": earlier.get("seconds"), "machine": earlier.get("machine")})


def write_outputs(result: dict, out: Path) -> list[Path]:
    """frontier.json, report.md and frontier.png (identification vs DSSIM per attacker/protocol)."""
    from .frontier_report import plot, report_md

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "frontier.json", out / "report.md", out / "frontier.png"]
    tmp = paths[0].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
    tmp.replace(paths[0])
    paths[1].write_text(report_md(result))
    plot(result, paths[2])
    return paths
