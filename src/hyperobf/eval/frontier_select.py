"""Choosing among trained nets on held-out validation users (issue 13).

One training recipe's seeds differ (measured at ρ 0.025 against the strong from-scratch ResNet-18 on the
test users: 0.06 / 0.24 / 0.40). A PSP may train several and issue nets from one; choosing it by the
test users' numbers would make the test part of the training. The choice here reads only a frontier run
on ``--holdout-users`` (validation users, the test users set aside): lowest mean identification by one
attacker at one budget, ties to the lower mean DSSIM.
"""

from __future__ import annotations

from .frontier import row_kind
from .splits import is_holdout


def rank_nets(result: dict, attacker: str, rho: float) -> list[dict]:
    """The run's net rows at ``rho`` ranked for ``attacker`` (best first): protector, checkpoint, mean, sd,
    dssim_mean. ValueError unless the run is on held-out users and measured that attacker on some net."""
    if not is_holdout(result):
        raise ValueError("choose nets on a run with --holdout-users (this one measured the test users: "
                         "choosing on them would make the test part of the training)")
    rows = [r for r in result["rows"] if row_kind(r["protector"]) == "net" and r.get("rho") is not None
            and abs(r["rho"] - rho) < 1e-12 and attacker in r["acc"]]
    if not rows:
        have = sorted({k for r in result["rows"] if row_kind(r["protector"]) == "net" for k in r["acc"]})
        raise ValueError(f"no net row at rho {rho} measured by {attacker!r} (net rows have: {', '.join(have) or 'none'})")
    ranked = sorted(rows, key=lambda r: (r["acc"][attacker]["mean"], r["dssim_mean"]))
    return [{"protector": r["protector"], "checkpoint": r.get("checkpoint"), "mean": r["acc"][attacker]["mean"],
             "sd": r["acc"][attacker]["sd"], "dssim_mean": r["dssim_mean"]} for r in ranked]
