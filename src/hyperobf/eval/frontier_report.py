"""The frontier's report (markdown table) and plot (identification vs DSSIM, one line per protector)."""

from __future__ import annotations

import re
from pathlib import Path


def _family(protector: str) -> str:
    """Rows of one family form one line across budgets (e.g. every ``net:D14`` row)."""
    return protector


def _cell(s: dict | None) -> str:
    if not s or s.get("mean") is None:
        return "–"
    return f"{s['mean']:.2f} ± {s['sd']:.2f}"


def _main_attackers(result: dict) -> list[str]:
    """Attacker/protocol keys without a counter (``+jpeg75`` ...): the main table and the plot."""
    return [a for a in result["attackers"] if "+" not in a]


def _counter_table(result: dict) -> list[str]:
    """One row per protector and ρ, one column per attacker/protocol + counter, identification."""
    keys = [a for a in result["attackers"] if "+" in a]
    if not keys:
        return []
    lines = ["", "After counters (the attacker passes the protected uploads through the counter first; clean row = "
             "the counter on clean uploads):", "",
             "| protector | ρ | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for r in result["rows"]:
        if not any(k in r["acc"] for k in keys):
            continue
        rho = "–" if r["rho"] is None else f"{r['rho']:g}"
        lines.append(f"| {r['protector']} | {rho} | " + " | ".join(_cell(r["acc"].get(k)) for k in keys) + " |")
    return lines


def _paired_table(result: dict) -> list[str]:
    """The trained attackers (ResNets, with and without counters) per user against their clean level:
    mean ± sd of the paired difference and how many users went down / up (their sd over users is large,
    so the pairing is what says whether a protector moved them)."""
    from .stats import summary

    clean = next(r for r in result["rows"] if r["protector"] == "clean").get("per_user", {})
    keys = [a for a in result["attackers"] if a.startswith("resnet") and clean.get(a)]
    if not keys:
        return []
    lines = ["", "Paired with the clean level, per user (protected − clean: mean ± sd, users lower / higher):", "",
             "| protector | ρ | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for r in result["rows"]:
        if r["protector"] == "clean" or not any(r.get("per_user", {}).get(k) for k in keys):
            continue
        cells = []
        for k in keys:
            got = r.get("per_user", {}).get(k)
            if not got or len(got) != len(clean[k]):
                cells.append("–")
                continue
            d = [a - b for a, b in zip(got, clean[k])]
            s = summary(d)
            cells.append(f"{s['mean']:+.2f} ± {s['sd']:.2f} ({sum(x < -1e-9 for x in d)} / {sum(x > 1e-9 for x in d)})")
        rho = "–" if r["rho"] is None else f"{r['rho']:g}"
        lines.append(f"| {r['protector']} | {rho} | " + " | ".join(cells) + " |")
    return lines


def _listed(result: dict, key: str, header: str, line) -> list[str]:
    """A bulleted section over the rows that carry ``key``: line(row, row[key]) each; nothing when none does."""
    rows = [r for r in result["rows"] if r.get(key)]
    return ["", header, "", *(line(r, r[key]) for r in rows)] if rows else []


def report_md(result: dict) -> str:
    from .splits import is_holdout

    attackers = _main_attackers(result)
    cfg = result["config"]
    lines = [
        "# Budget–protection frontier",
        "",
        *(["**Held-out validation users** (`--holdout-users`: the split seed's test users set aside): numbers for "
           "choosing among nets, not a protection claim.", ""] if is_holdout(result) else []),
        f"{result['targets']} target users × {result['uploads_per_target']} protected uploads, "
        f"{result['distractors']} distractor identities; clean test photos per target: "
        f"{min(result['test_per_target'])}–{max(result['test_per_target'])}. Identification: share of the "
        "attacker's queries labelled as the target (mean ± sd over target users). `query`: protected uploads "
        "against a clean gallery; `gallery`: clean photos against a gallery holding the protected uploads "
        "(Fawkes). Budget rule for every row with a ρ: 8-bit output, per-image DSSIM ≤ ρ (δ scaled down to fit), "
        f"|δ| ≤ the clip. White box of the limit: {cfg['whitebox']}; hybrid refinement embedder: "
        f"{cfg['hybrid_embedder']} (step {cfg['hybrid_step']:.4f})."
        + (" Scale settings changed for this run: " + ", ".join(f"{k} = {v}" for k, v in result["scale_overrides"].items())
           + "." if result.get("scale_overrides") else "")
        + (" `inverted (n held)` rows: the uploads after the attacker's InvNet trained on n other nets of the same "
           "HyperNet (E3/E4; the thesis's InvNet, randomly initialised, unless the row says it starts as the identity); "
           "their DSSIM is the restored uploads' distance to the originals."
           if any("held_nets" in r for r in result["rows"]) else ""),
        "",
        f"Machine: {result['machine']['processor']} ({result['machine'].get('cores', '?')} cores), "
        f"{result['machine']['torch_threads']} torch threads, load "
        f"{', '.join(f'{x:.1f}' for x in result['machine']['loadavg'])} at the end; wall {result['seconds']:.0f} s "
        "(rows joined from earlier runs list their own time).",
        "",
        "| protector | ρ | DSSIM mean (max) | cos " + " | cos ".join(k[4:] for k in sorted(result['rows'][0]) if k.startswith("cos_"))
        + " | " + " | ".join(attackers) + " | s |",
        "|---|---|---|" + "---|" * (len([k for k in result['rows'][0] if k.startswith('cos_')]) + len(attackers) + 1),
    ]
    for r in result["rows"]:
        cos = " | ".join(f"{r[k]:.3f}" for k in sorted(r) if k.startswith("cos_"))
        accs = " | ".join(_cell(r["acc"].get(a)) for a in attackers)
        rho = "–" if r["rho"] is None else f"{r['rho']:g}"
        lines.append(f"| {r['protector']} | {rho} | {r['dssim_mean']:.4f} ({r['dssim_max']:.4f}) | {cos} | {accs} | "
                     f"{r['seconds']:.0f} |")
    lines += _counter_table(result)
    lines += _paired_table(result)
    for inc in result.get("included", []):
        lines.append(f"\nRows from `{inc['source']}` (same split, uploads and attackers; {inc['seconds']:.0f} s): "
                     f"`{inc['command']}`")
    lines += _listed(result, "between_users", "How alike the users' nets are (each user's net on the same uploads; "
                     "δ cos 1 and every pair identical: the HyperNet issues one perturbation to everyone, whatever its "
                     "weights):", lambda r, b: f"- {r['protector'].removesuffix(' as issued')}: δ cos "
                     f"{b['delta_cos']:.3f}, identical pairs {b['identical_pairs']:.2f}"
                     + (f", one δ for {b['largest_group']:.0%}" if "largest_group" in b else "") + f" ({b['nets']} nets)")
    from ..train.diversity import SAME_DELTA

    lines += _listed(result, "held_cos", f"Users whose very perturbation the attacker holds (δ cos ≥ {SAME_DELTA:g} between the "
                     "user's net and one of the attacker's own nets; its InvNet then learns to undo exactly it):",
                     lambda r, c: f"- {r['protector']} ρ {r['rho']:g}: {sum(v >= SAME_DELTA for v in c)} / {len(c)} users")
    hist = [r for r in result["rows"] if r.get("history") and "steps" in r["history"][0]]
    turns = [r for r in result["rows"] if r.get("history") and "turn" in r["history"][0]]  # limit-errmin
    if hist:
        lines += ["", "Stopping rule of the limit (steps doubled with a fresh restart, better run kept per photo, "
                  f"until identification moves < {cfg['limit_tol']}, or the run's --limit-max-steps):", ""]
        for r in hist:
            steps = " → ".join(f"{h['steps']}: {h['identified']:.3f}" for h in r["history"])
            ok = "converged" if r["history"][-1].get("converged") else "NOT converged at the cap"
            lines.append(f"- {r['protector']} ρ {r['rho']:g}: {steps} ({ok})")
    if turns:
        lines += ["", "Stopping rule of the error-minimising limit (min–min turns until its surrogate classifies "
                  "≥ 99% of the budgeted uploads and of the distractors, or the run's --errmin-rounds):", ""]
        for r in turns:
            last = r["history"][-1]
            ok = "converged" if last.get("converged") else "NOT converged at the cap"
            how = f"{r.get('train_steps', 10)} surrogate steps a turn" + (", rate decayed" if r.get("decay") else "")
            lines.append(f"- {r['protector']} ρ {r['rho']:g}: {last['turn']} turns ({how}), surrogate "
                         f"{last['surrogate_acc']:.3f} on the uploads, {last['surrogate_acc_distractors']:.3f} on the "
                         f"distractors ({ok})")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attackers = _main_attackers(result)
    cols = min(3, len(attackers))
    rows_n = -(-len(attackers) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 4 * rows_n), squeeze=False)
    clean = next(r for r in result["rows"] if r["protector"] == "clean")
    families: dict[str, list[dict]] = {}
    for r in result["rows"]:
        if r["rho"] and r["protector"] != "clean":
            families.setdefault(_family(r["protector"]), []).append(r)
    # one colour per protector in every panel; tab20 once tab10's ten colours would repeat
    cmap = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    colour = {fam: cmap(i % cmap.N) for i, fam in enumerate(families)}
    for ax, att in zip(axes.flat, attackers):
        for fam, rs in families.items():
            rs = sorted((r for r in rs if att in r["acc"]), key=lambda r: r["rho"])
            if not rs:
                continue
            xs = [r["dssim_mean"] for r in rs]
            ys = [r["acc"][att]["mean"] for r in rs]
            es = [r["acc"][att]["sd"] for r in rs]
            style = "--" if fam.startswith("limit") else ("-." if fam.startswith("hybrid") else "-")
            ax.errorbar(xs, ys, yerr=es, fmt="o" + style, capsize=2, label=re.sub(r"^net:", "net ", fam), alpha=0.8,
                        color=colour[fam])
        for r in result["rows"]:
            if r["rho"] is None and att in r["acc"]:  # nets as issued (no budget rule): single points
                ax.plot([r["dssim_mean"]], [r["acc"][att]["mean"]], "k*", ms=9)
        if att in clean["acc"]:  # a run may leave its ResNets off the clean row (--resnet-on)
            ax.axhline(clean["acc"][att]["mean"], color="grey", lw=1, ls=":", label="clean")
        ax.set_title(att)
        ax.set_xlabel("mean DSSIM of the protected uploads")
        ax.set_ylabel("identification")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    spare = list(axes.flat)[len(attackers):]
    for ax in spare:
        ax.axis("off")
    if spare:  # the legend in an empty panel, where it hides no point
        spare[0].legend(*axes.flat[0].get_legend_handles_labels(), fontsize=7, loc="upper left")
    else:
        axes.flat[0].legend(fontsize=6, loc="lower left")
    m = result["machine"]
    fig.suptitle(f"Budget–protection frontier ({result['targets']} users; {m['processor']}, "
                 f"{m['torch_threads']} threads); * = net as issued", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
