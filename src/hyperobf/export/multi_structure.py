"""Issue users from several HyperNets (one per MaskNet structure): each user gets a structure drawn
with a CSPRNG, so an attacker cannot tell from a user's id which architecture protects them.

Layout: ``out/<structure>/`` is an ordinary export of that HyperNet's users (its own manifest), and
``out/manifest.jsonl`` lists every user. Either everything is written or, on any failure, nothing:
the per-structure folders made by this call are removed again.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from ..train.checkpoint import Loaded
from .issue import MANIFEST, IssueReport, issue_users
from .errors import ExportError


def assign_structures(n_users: int, k: int) -> list[int]:
    """One structure index per user, uniform over k, from the OS CSPRNG (never from the user id)."""
    return [secrets.randbelow(k) for _ in range(n_users)]


def issue_structures(loadeds: list[Loaded], n_users: int, out: str | Path, *, user_prefix: str = "user",
                seeds_file: str | Path | None = None, **kw) -> dict[str, IssueReport]:
    """``issue_users`` per HyperNet over a random split of the users; returns {structure: report}."""
    names = [ld.spec.name for ld in loadeds]
    if len(set(names)) != len(names):
        raise ExportError(f"one checkpoint per structure, got structures {', '.join(names)}")
    if n_users < 1:
        raise ExportError("number of users must be >= 1")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} must be a new or empty folder for a multi-structure export")
    if seeds_file is not None and Path(seeds_file).exists():
        raise ExportError(f"seeds file {seeds_file} already exists; it holds users' secrets and is never overwritten")
    width = max(4, len(str(n_users - 1)))
    users = [f"{user_prefix}{i:0{width}d}" for i in range(n_users)]
    groups: dict[int, list[str]] = {}
    for u, k in zip(users, assign_structures(n_users, len(loadeds))):
        groups.setdefault(k, []).append(u)
    made_out = not out.exists()
    reports: dict[str, IssueReport] = {}
    try:
        for k, members in sorted(groups.items()):
            name = names[k]
            seeds = None if seeds_file is None else Path(f"{seeds_file}.{name}")
            reports[name] = issue_users(loadeds[k], len(members), out / name, user_ids=members,
                                        seeds_file=seeds, **kw)
        rows = []
        for name, rep in reports.items():
            for line in rep.manifest.read_text().splitlines():
                row = json.loads(line)
                row["file"] = f"{name}/{row['file']}"
                rows.append(row)
        rows.sort(key=lambda r: (r["user"], r["format"], r["precision"]))
        tmp = out / f".{MANIFEST}.tmp"
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        os.replace(tmp, out / MANIFEST)
    except BaseException:
        for name in reports:  # all or nothing: drop what this call wrote
            shutil.rmtree(out / name, ignore_errors=True)
            if seeds_file is not None:
                Path(f"{seeds_file}.{name}").unlink(missing_ok=True)
        (out / f".{MANIFEST}.tmp").unlink(missing_ok=True)
        if made_out:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return reports
