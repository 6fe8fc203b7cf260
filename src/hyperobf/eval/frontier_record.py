"""Frontier -> protection record: each net's *as issued* numbers go into its checkpoint's record.

Only the as-issued rows are recorded: they are what `hyperobf export` ships (the budget rule's
per-image scaling is an evaluation device, not part of the exported net).
"""

from __future__ import annotations

from pathlib import Path

PROTOCOLS = {
    "query": "protected uploads vs a clean gallery",
    "gallery": "clean photos vs a gallery of the protected uploads (Fawkes)",
}


def entries_for(result: dict, row: dict, faces: Path, command: str) -> list[dict]:
    from ..protection import entry

    clean = next(r for r in result["rows"] if r["protector"] == "clean")
    data = (f"{Path(result['split']['faces_root']).name}/{result['split']['fr_source']} split seed "
            f"{result['split']['seed']}: {result['targets']} users x {result['uploads_per_target']} uploads, "
            f"{result['distractors']} distractors")
    out = []
    for key, s in row["acc"].items():
        attacker, protocol = key.split("/")
        n_q = (result["uploads_per_target"] if protocol == "query" else sum(result["test_per_target"]))
        out.append(entry(attacker, PROTOCOLS.get(protocol, protocol), data, clean["acc"][key]["mean"], s["mean"],
                         row["dssim_mean"], row["dssim_max"], n_q * (1 if protocol != "query" else result["targets"]),
                         result["targets"], command, sd=s["sd"], source="eval frontier"))
    return out


def record_nets(result: dict, faces: Path, command: str) -> list[str]:
    """Write the as-issued rows into their checkpoints; returns one line per checkpoint."""
    from ..protection import status_line
    from ..train.checkpoint import record_protection

    lines = []
    for row in result["rows"]:
        if row["rho"] is None and row.get("checkpoint"):
            rec = record_protection(row["checkpoint"], entries_for(result, row, faces, command))
            lines.append(f"recorded in {row['checkpoint']}: {status_line(rec)}")
    return lines
