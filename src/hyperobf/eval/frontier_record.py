"""Frontier -> protection record: each net's numbers go into its checkpoint's record.

Recorded: the net *as issued* (no budget enforced: what `hyperobf protect` does without a preset)
and the net under each preset's budget (:mod:`hyperobf.presets`: what `protect --preset` ships).
Rows at other budgets stay in the frontier's table only. An inversion row (the attacker restored the
uploads with an InvNet of nets it holds) is its own attack, named so; a ResNet trained with the scale's
settings overridden (``--scale-set``) names its recipe, so a weaker attacker's entry never replaces it; a
squeezing ResNet (``--resnet-counters``) is its own attacker. Embedders after a counter stay in the table.
A "filled" row (``--fill-budget``: δ scaled up to the budget) is not what the device ships: never recorded.
"""

from __future__ import annotations

from pathlib import Path

PROTOCOLS = {
    "query": "protected uploads vs a clean gallery",
    "gallery": "clean photos vs a gallery of the protected uploads (Fawkes)",
}


def entries_for(result: dict, row: dict, faces: Path, command: str, preset: str | None = None) -> list[dict]:
    from ..protection import entry

    clean = next(r for r in result["rows"] if r["protector"] == "clean")
    data = _data(result)
    out = []
    recipe = " ".join(f"{k}={v}" for k, v in sorted((result.get("scale_overrides") or {}).items()) if k.startswith("fr_"))
    for key, s in row["acc"].items():
        attacker, rest = key.split("/")
        protocol, _, counter = rest.partition("+")
        trained = attacker.startswith("resnet")  # trained on the uploads (vs a frozen embedder)
        if counter and not trained:  # an embedder after a counter: the frontier's table only
            continue
        if recipe and trained:
            attacker += f" ({recipe})"
        if counter:  # a ResNet that passes every image it trains and queries on through it (--resnet-counters)
            attacker += f" with every image through {counter}"
        if row.get("held_nets"):
            attacker += f" after an InvNet of {row['held_nets']} held net(s)" + (
                f" (identity start, {row['invnet_epochs']} epochs)" if row.get("invnet_identity_start") else "") + (
                f" (accounts' draw {row['held_draw']})" if row.get("held_draw") else "")
        n_q = (result["uploads_per_target"] if protocol == "query" else sum(result["test_per_target"]))
        if key not in clean["acc"]:
            continue  # no clean level for it (a run whose --resnet-on left the ResNets off its clean row)
        out.append(entry(attacker, PROTOCOLS.get(protocol, protocol), data, clean["acc"][key]["mean"], s["mean"],
                         row["dssim_mean"], row["dssim_max"], n_q * (1 if protocol != "query" else result["targets"]),
                         result["targets"], _command_of(result, row.get("attackers_from", {}).get(key), command),
                         sd=s["sd"], source="eval frontier",
                         **({"preset": preset, "rho": row["rho"]} if preset else {})))
    return out


def _data(result: dict) -> str:
    """The split a frontier measured on, in words."""
    return (f"{Path(result['split']['faces_root']).name}/{result['split']['fr_source']} split seed "
            f"{result['split']['seed']}: {result['targets']} users x {result['uploads_per_target']} uploads, "
            f"{result['distractors']} distractors")


def _command_of(result: dict, source: str | None, command: str) -> str:
    """The command of the joined run ``source`` (``command`` when None or unknown)."""
    return next((i["command"] for i in result.get("included", []) if i["source"] == source and i.get("command")),
                command) if source else command


def row_command(result: dict, row: dict, command: str) -> str:
    """The command that measured ``row``: its own run's, for a row joined from another run."""
    return _command_of(result, row.get("included_from"), command)


def record_nets(result: dict, faces: Path, command: str) -> list[str]:
    """Write the as-issued and preset rows into their checkpoints; returns one line per checkpoint."""
    from ..protection import alike_line, status_line
    from ..train.checkpoint import record_protection

    from ..presets import preset_for
    from .splits import is_holdout

    if is_holdout(result):  # validation users: for choosing nets, not what a user is told
        return ["not recorded: measured on held-out validation users (--holdout-users)"]
    per_checkpoint: dict[str, list[dict]] = {}
    alike: dict[str, tuple[dict, str, str]] = {}
    for row in result["rows"]:
        if not row.get("checkpoint") or not row["protector"].startswith("net:") or row.get("filled"):
            continue
        if row["rho"] is None:  # as issued: no budget enforced
            per_checkpoint.setdefault(row["checkpoint"], []).extend(
                entries_for(result, row, faces, row_command(result, row, command)))
            if row.get("between_users"):  # each target user's net on the same uploads (Frontier.net_similarity)
                alike[row["checkpoint"]] = (row["between_users"], f"{_data(result)}, each user's net on the "
                                            "same uploads", "eval frontier")
        elif preset_for(row["rho"]):  # under a preset's budget: what `protect --preset` ships
            per_checkpoint.setdefault(row["checkpoint"], []).extend(
                entries_for(result, row, faces, row_command(result, row, command), preset_for(row["rho"])))
    lines = []
    for ck, entries in per_checkpoint.items():
        if not Path(ck).is_file():  # a run joined from another machine or an earlier checkout: its file is gone
            lines.append(f"not recorded: {ck} is absent ({len(entries)} measurements stay in the table only)")
            continue
        rec = record_protection(ck, entries, alike=alike.get(ck))
        lines.append(f"recorded {len(entries)} measurements in {ck}: {status_line(rec)}")
        lines += [w for w in (alike_line(rec),) if w]
    return lines
