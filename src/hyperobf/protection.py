"""The protection record: what was measured about a HyperNet's protection, and by whom.

One record per checkpoint, the single place every measurement of protection lands:
``hyperobf protection-check`` and ``hyperobf eval frontier`` write it into the checkpoint,
``hyperobf export`` and the PSP copy it into every model's metadata (``hyperobf.protection``),
and ``hyperobf protect`` prints one line from it (or "protection not measured") plus a warning
when a measured attacker still identifies more than half of the protected photos — both from the
entries measured under the budget preset the photos are protected with, when there are any — and a
warning when the HyperNet's users' nets were measured to perturb faces alike (``alike``: then a user's
"own" net is everyone's, and an attacker who holds one can learn to undo the others).
Pure Python (no torch): the device runtime imports this module.

Record (JSON)::

    {"version": 1, "updated": "2026-11-29T03:00:00Z", "preset": null,
     "entries": [{"attacker": "mobilefacenet", "protocol": "...", "data": "...",
                  "acc_clean": 1.0, "acc_protected": 0.911, "dssim_mean": 0.0072, "dssim_max": 0.015,
                  "queries": 281, "identities": 24, "date": "...", "command": "hyperobf ..."}],
     "alike": {"delta_cos": 0.27, "identical_pairs": 0.24, "largest_group": 0.5, "nets": 10, "data": "...",
               "date": "...", "source": "eval frontier"}}

``alike`` (optional) is how alike the users' nets perturb the same faces (:mod:`hyperobf.eval.alike`):
delta_cos, the mean cosine between two users' δ on the same face (1: one perturbation for everyone),
identical_pairs, the share of user pairs whose δ are identical at 8 bits, largest_group (when measured), the share
of users whose nets output one δ; the newest measurement replaces it.

An entry is keyed by (attacker, protocol, data, preset): a new measurement replaces the old one.
Entries with a ``preset`` were measured under that preset's budget (:mod:`hyperobf.presets`);
entries without one measured the net as issued, with no budget enforced.
"""

from __future__ import annotations

import time
from typing import Any

RECORD_VERSION = 1
FAILS_ABOVE = 0.5  # an attacker that still identifies more than this share: the photos are not protected
ALIKE_ABOVE = 0.9  # users' nets whose δ have a higher mean cosine are, to an attacker, one net
_KEY = ("attacker", "protocol", "data")
_NUMBERS = ("acc_clean", "acc_protected", "dssim_mean", "dssim_max")


class RecordError(ValueError):
    """A protection record that is not well formed (one-line reason)."""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def entry(attacker: str, protocol: str, data: str, acc_clean: float, acc_protected: float, dssim_mean: float,
          dssim_max: float, queries: int, identities: int, command: str, **extra: Any) -> dict:
    """One measured attack. ``acc_*``: share of the attacker's queries it identifies correctly."""
    e = {"attacker": attacker, "protocol": protocol, "data": data, "acc_clean": float(acc_clean),
         "acc_protected": float(acc_protected), "dssim_mean": float(dssim_mean), "dssim_max": float(dssim_max),
         "queries": int(queries), "identities": int(identities), "date": now(), "command": command}
    e.update(extra)
    return e


def validate(record: Any) -> dict | None:
    """The record if well formed, None for "not measured"; RecordError otherwise."""
    if record is None:
        return None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise RecordError(f"protection record is not version {RECORD_VERSION}")
    entries = record.get("entries")
    if not isinstance(entries, list):
        raise RecordError("protection record has no entry list")
    for e in entries:
        if not isinstance(e, dict) or any(not isinstance(e.get(k), str) for k in _KEY):
            raise RecordError("protection record entry lacks attacker/protocol/data")
        if any(not isinstance(e.get(k), (int, float)) for k in _NUMBERS):
            raise RecordError(f"protection record entry for {e['attacker']} lacks its numbers")
    alike = record.get("alike")
    if alike is not None and (not isinstance(alike, dict) or any(
            not isinstance(alike.get(k), (int, float)) for k in ("delta_cos", "identical_pairs", "nets"))):
        raise RecordError("protection record's alike measurement lacks its numbers")
    return record


def _key(e: dict) -> tuple:
    """What identifies a measurement: attacker, protocol, data and the preset (budget) it ran under."""
    return (*(e[k] for k in _KEY), e.get("preset"))


def merge(record: dict | None, entries: list[dict], preset: str | None = None) -> dict:
    """``record`` with ``entries`` added; an entry with the same (attacker, protocol, data, preset) is replaced."""
    old = list((validate(record) or {}).get("entries", []))
    keys = {_key(e) for e in entries}
    kept = [e for e in old if _key(e) not in keys]
    out = {"version": RECORD_VERSION, "updated": now(), "preset": (record or {}).get("preset"),
           "entries": kept + list(entries)}
    if preset is not None:
        out["preset"] = preset
    if (record or {}).get("alike") is not None:
        out["alike"] = record["alike"]
    return out


def with_alike(record: dict | None, similarity: dict, data: str, source: str) -> dict:
    """``record`` (or a new one without entries) with its ``alike`` measurement replaced by ``similarity``
    ({delta_cos, identical_pairs, nets}: :func:`hyperobf.train.diversity.output_similarity`) measured on ``data``."""
    out = merge(record, [])
    out["alike"] = {"delta_cos": float(similarity["delta_cos"]), "identical_pairs": float(similarity["identical_pairs"]),
                    "nets": int(similarity["nets"]), "data": data, "date": now(), "source": source}
    if "largest_group" in similarity:
        out["alike"]["largest_group"] = float(similarity["largest_group"])
    return out


def alike_line(record: dict | None) -> str | None:
    """A warning when the record says the users' nets perturb faces alike (any pair identical at 8 bits, a mean δ
    cosine above ALIKE_ABOVE, or one δ for more than half of them); None when they differ or nobody measured it."""
    a = (validate(record) or {}).get("alike")
    if not a or (a["identical_pairs"] <= 0 and a["delta_cos"] <= ALIKE_ABOVE and a.get("largest_group", 0) <= 0.5):
        return None
    pairs = a["nets"] * (a["nets"] - 1) // 2
    group = f"; one δ for {a['largest_group']:.0%} of them" if isinstance(a.get("largest_group"), (int, float)) else ""
    return (f"warning: this HyperNet's nets perturb faces alike for different users (δ cos {a['delta_cos']:.2f}; "
            f"{a['identical_pairs']:.0%} of {pairs} user pairs identical{group}; {a.get('data', '?')}, "
            f"{str(a.get('date', '?'))[:10]}): an attacker holding another user's net can learn to undo yours")


def select(record: dict | None, preset: str | None = None, rho: float | None = None) -> tuple[list[dict], bool]:
    """The entries that speak for a run under a budget: (entries, True) when some were measured under it,
    else (all entries, False). The budget is the preset ``preset``, or a DSSIM ``rho`` that is no preset's
    (entries carry the ρ they ran under); neither: all entries, True."""
    entries = list((validate(record) or {}).get("entries", []))
    if preset is None and rho is None:
        return entries, True
    if preset is not None:
        mine = [e for e in entries if e.get("preset") == preset]
    else:
        mine = [e for e in entries if isinstance(e.get("rho"), (int, float)) and abs(e["rho"] - rho) < 1e-12]
    return (mine, True) if mine else (entries, False)


def failing(record: dict | None, preset: str | None = None, rho: float | None = None) -> list[dict]:
    """Entries (of the budget in use, see :func:`select`) whose attacker still identifies more than half of
    the protected photos."""
    return [e for e in select(record, preset, rho)[0] if e["acc_protected"] > FAILS_ABOVE]


def _budget(e: dict) -> str:
    if e.get("preset"):
        return f"preset {e['preset']}"
    return f"DSSIM <= {e['rho']:g}" if isinstance(e.get("rho"), (int, float)) else "as issued, no budget"


def status_line(record: dict | None, preset: str | None = None, rho: float | None = None) -> str:
    """One line for the user: the measured numbers, or that nothing was measured.

    ``preset`` (or, for a budget that is no preset's, ``rho``): the budget the photos are protected under
    (``hyperobf protect --preset`` / ``--budget``); the line shows the entries measured under it, or — when
    there are none — all entries, each with the budget it was measured under, and says so. Neither: all.
    """
    rec = validate(record)
    if not rec or not rec["entries"]:
        return ("protection not measured: nobody has attacked the HyperNet behind this model, "
                "so there is no evidence that it protects")
    entries, matched = select(rec, preset, rho)
    asked = f"preset {preset}" if preset is not None else (f"DSSIM <= {rho:g}" if rho is not None else None)
    labelled = not (asked and matched)  # mixed budgets: name each entry's
    parts = [f"{e['attacker']} identifies {e['acc_clean']:.2f} -> {e['acc_protected']:.2f} "
             f"({e['data']}, {e['protocol']}; " + (f"{_budget(e)}; " if labelled else "")
             + f"DSSIM {e['dssim_mean']:.4f}, max {e['dssim_max']:.4f})"
             for e in entries]
    when = max(e["date"] for e in entries)[:10]
    if asked and matched:
        head = f"protection measured {when} under {asked}"
    elif asked:
        head = f"protection measured {when} (nothing measured under {asked}: all measurements shown)"
    else:
        head = f"protection measured {when}" + (f" [preset {rec['preset']}]" if rec.get("preset") else "")
    return head + ": " + "; ".join(parts)


def warning_line(record: dict | None, preset: str | None = None, rho: float | None = None) -> str | None:
    """A warning when any measured attacker (of the budget in use, see :func:`select`) identifies more than
    half of the protected photos."""
    bad = failing(record, preset, rho)
    if not bad:
        return None
    names = ", ".join(f"{e['attacker']} {e['acc_protected']:.2f}" for e in bad)
    return (f"warning: these photos are NOT protected against every measured attacker: {names} of the "
            f"protected photos are still identified (more than {FAILS_ABOVE:.0%})")
