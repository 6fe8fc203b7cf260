"""Is one method's protection below another's? A paired comparison over the users of several frontier runs.

Issue 13 asks for "the HyperNet below both baselines" under mix-inversion. One table cannot settle it: the
per-user spread (sd 0.16–0.25 at 10 users) is larger than the differences between methods. This pools the
users of several runs (other splits, the held-out users) on which both methods were measured, pairs the two
methods user by user — same split seed, same held-out flag, same target: the same uploads, test photos and
attackers — and reports the mean paired difference with a bootstrap interval and an exact sign test. A
method may be several rows (seeds, draws of the attacker's account): its value on a user is their mean.
"""

from __future__ import annotations

import fnmatch
import math
import random

from .splits import is_holdout
from .stats import summary


def _user_keys(result: dict) -> list[tuple]:
    """One key per target of the run, in the order of its per-user lists (the split's targets, sorted)."""
    split = result["split"]
    return [(split.get("seed"), is_holdout(result), t) for t in sorted(split["targets"])]


def _matches(protector: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(protector, p) for p in patterns)


def method_values(results: list[tuple[str, dict]], patterns: list[str], attacker: str,
                  rho: float | None = None) -> tuple[dict[tuple, list[float]], list[dict]]:
    """{user key: the matching rows' values on that user}, and the rows used (protector, ρ, users, mean, source).
    A row that several runs hold (a joined table and the run it came from) counts once."""
    values: dict[tuple, list[float]] = {}
    used: list[dict] = []
    seen: set[tuple] = set()
    for source, result in results:
        if not isinstance(result, dict) or not {"rows", "split"} <= result.keys():
            raise ValueError(f"{source}: not a frontier.json (no rows and split)")
        keys = _user_keys(result)
        if not keys:
            raise ValueError(f"{source}: its split has no target users")
        for r in result["rows"]:
            got = (r.get("per_user") or {}).get(attacker)
            if r["protector"] == "clean" or not got or not _matches(r["protector"], patterns):
                continue
            if rho is not None and (r.get("rho") is None or abs(r["rho"] - rho) > 1e-12):
                continue
            ident = (keys[0][:2], tuple(k[2] for k in keys), r["protector"], r.get("rho"))
            if ident in seen:
                continue
            if len(got) != len(keys):
                raise ValueError(f"{source}: {r['protector']} has {len(got)} per-user values for {len(keys)} targets")
            seen.add(ident)
            for k, v in zip(keys, got):
                values.setdefault(k, []).append(float(v))
            used.append({"protector": r["protector"], "rho": r.get("rho"), "split_seed": keys[0][0],
                         "holdout": keys[0][1], "users": len(keys), "mean": sum(got) / len(got), "source": source})
    return values, used


def _clean_values(results: list[tuple[str, dict]], attacker: str) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for _, result in results:
        clean = next((r for r in result["rows"] if r["protector"] == "clean"), None)
        got = ((clean or {}).get("per_user") or {}).get(attacker)
        if got:
            out.update({k: float(v) for k, v in zip(_user_keys(result), got) if k not in out})
    return out


def sign_test_p(lower: int, higher: int) -> float:
    """Exact two-sided sign test on the users that differ (ties dropped)."""
    m = lower + higher
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(lower, higher) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def compare(results: list[tuple[str, dict]], a: list[str], b: list[str], attacker: str, rho: float | None = None,
            resamples: int = 10_000, seed: int = 0) -> dict:
    """A − B per user (negative: A protects more) over the users both were measured on: mean ± sd, users lower /
    higher / tied, a percentile bootstrap 95 % interval of the mean, the sign test's p, and how many users a
    95 % interval as wide as the mean difference would need (normal approximation). ValueError without pairs."""
    va, rows_a = method_values(results, a, attacker, rho)
    vb, rows_b = method_values(results, b, attacker, rho)
    for name, rows, pats in (("A", rows_a, a), ("B", rows_b, b)):
        if not rows:
            raise ValueError(f"no row matches {name} ({', '.join(pats)}) with per-user values for {attacker!r}")
    keys = sorted(va.keys() & vb.keys(), key=str)
    if not keys:
        raise ValueError("A and B were never measured on the same users (same split seed and held-out flag)")
    pa = [_mean(va[k]) for k in keys]
    pb = [_mean(vb[k]) for k in keys]
    d = [x - y for x, y in zip(pa, pb)]
    n = len(d)
    s = summary(d)  # the harness's mean ± sd (sample sd), as in every table
    mean, sd = s["mean"], s["sd"]
    rng = random.Random(seed)
    boots = sorted(_mean([d[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    lo, hi = boots[int(0.025 * (resamples - 1))], boots[int(0.975 * (resamples - 1))]
    lower, higher = sum(x < -1e-9 for x in d), sum(x > 1e-9 for x in d)
    clean = _clean_values(results, attacker)
    verdict = ("A below B" if hi < 0 else "A above B" if lo > 0 else "not resolved")
    return {
        "attacker": attacker, "rho": rho, "a": a, "b": b, "rows_a": rows_a, "rows_b": rows_b,
        "users": n, "identities": len({k[2] for k in keys}),
        "splits": sorted({(k[0], k[1]) for k in keys}, key=str),
        "clean_mean": _mean([clean[k] for k in keys]) if all(k in clean for k in keys) else None,
        "mean_a": _mean(pa), "mean_b": _mean(pb), "diff_mean": mean, "diff_sd": sd,
        "lower": lower, "higher": higher, "ties": n - lower - higher,
        "ci95": [lo, hi], "resamples": resamples, "sign_p": sign_test_p(lower, higher),
        "users_for_resolution": math.ceil((1.96 * sd / abs(mean)) ** 2) if abs(mean) > 1e-9 and sd > 0 else None,
        "verdict": verdict,
    }


def compare_md(c: dict) -> str:
    """The comparison as a few markdown lines (what `eval frontier-compare` prints)."""
    splits = ", ".join(f"split {s}{' held-out' if h else ''}" for s, h in c["splits"])
    rows = lambda rs: "; ".join(f"{r['protector']} (split {r['split_seed']}{' held-out' if r['holdout'] else ''}: "  # noqa: E731
                                f"{r['mean']:.2f})" for r in rs)
    clean = f", clean level {c['clean_mean']:.2f}" if c["clean_mean"] is not None else ""
    need = (f"; a 95 % interval as narrow as this difference needs ~{c['users_for_resolution']} users"
            if c["users_for_resolution"] else "")
    at = "" if c["rho"] is None else f" at rho {c['rho']:g}"
    return "\n".join([
        f"{c['attacker']}{at}: "
        f"{c['users']} paired users ({c['identities']} identities; {splits}){clean}",
        f"A = {rows(c['rows_a'])}",
        f"B = {rows(c['rows_b'])}",
        f"A {c['mean_a']:.3f}, B {c['mean_b']:.3f}; A − B {c['diff_mean']:+.3f} ± {c['diff_sd']:.3f} "
        f"(95 % bootstrap interval {c['ci95'][0]:+.3f} … {c['ci95'][1]:+.3f}); users lower / higher / tied "
        f"{c['lower']} / {c['higher']} / {c['ties']}, sign test p {c['sign_p']:.2f}{need}",
        f"verdict: {c['verdict']}" + ("" if c["verdict"] != "not resolved" else " (the interval holds 0)"),
    ])
