"""What an export records beside the models: ``manifest.jsonl`` (one row per user and variant:
file, sha256, size, structure, spec digest, HyperNet) and the optional seeds file of users'
secret latents (mode 0600, outside the output folder, never inside a model file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .plan import IssuePlan, Job
from .writer import _write_file

MANIFEST = "manifest.jsonl"


def manifest_rows(plan: IssuePlan, ids: list[str], results: dict[Job, list[tuple[str, int]]]) -> list[dict]:
    """One row per user and job, users in order; ``results``: (sha256, bytes) per job and user."""
    loaded, spec = plan.loaded, plan.loaded.spec
    spec_digest = spec.digest()
    rows = []
    for i, user in enumerate(plan.users):
        for j in plan.jobs:
            sha, size = results[j][i]
            rows.append({"user": user, "model_id": ids[i], "file": plan.names[j][i], "format": j.row.name,
                         "precision": j.precision, "shape": plan.shape, "sha256": sha, "bytes": size,
                         "sha256_of": "package-tree" if j.row.is_directory else "file",
                         "structure": spec.name, "spec_digest": spec_digest,
                         "checkpoint_sha256": loaded.sha256, "method": loaded.config.method})
    return rows


def write_manifest(path: str | Path, rows: list[dict]) -> None:
    """JSON lines with sorted keys, created exclusively (the staging folder's copy)."""
    _write_file(path, memoryview("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()))


def write_seeds(path: Path, users: tuple[str, ...] | list[str], ids: list[str], z: np.ndarray) -> Path:
    """Secret latents for re-issue: JSON lines in a temp file created with mode 0600 beside ``path``
    (renamed over ``path`` once the models are in place). Never inside a model file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            for u, mid, zi in zip(users, ids, z):
                f.write(json.dumps({"user": u, "model_id": mid, "z": zi.tolist()}) + "\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp
