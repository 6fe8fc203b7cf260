"""What one export will do, checked before anything is generated or written: the (format,
precision) jobs from the format table, the users and their file names, the seeds file, and
which users are verified in full. Every refusal here is an :class:`ExportError` with a
one-line reason, raised before the output folder is touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..model_formats import FORMATS, PRECISIONS, SHAPES, FormatRow
from ..train.checkpoint import Loaded
from .errors import ExportError

VERIFY_MODES = ("sample", "all", "none")


@dataclass(frozen=True)
class Job:
    """One (format, precision) variant: every user gets one file (or package) of it."""

    row: FormatRow
    precision: str

    @property
    def label(self) -> str:
        return self.row.name if self.precision == "fp32" else f"{self.row.name}-{self.precision}"


def plan_jobs(formats: list[str] | tuple[str, ...], precisions: list[str] | tuple[str, ...]) -> tuple[list[Job], list[str]]:
    """(format, precision) jobs from the format table; unsupported pairs are listed, not run."""
    jobs, skipped = [], []
    for f in formats:
        if f not in FORMATS:
            raise ExportError(f"unknown format {f!r}; choose from {', '.join(FORMATS)}")
        for p in precisions:
            if p not in PRECISIONS:
                raise ExportError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
            if p in FORMATS[f].precisions:
                jobs.append(Job(FORMATS[f], p))
            else:
                skipped.append(f"{f} {p}: not supported (supported: {', '.join(FORMATS[f].precisions)})")
    if not jobs:
        raise ExportError("no supported format/precision combination requested: " + "; ".join(skipped))
    return jobs, skipped


def sample_indices(n: int, verify: str) -> list[int]:
    """Users verified in full against the torch reference (every file is read back regardless)."""
    if verify == "all":
        return list(range(n))
    if verify == "sample":
        return sorted({0, n // 2, n - 1})
    return []


@dataclass(frozen=True)
class IssuePlan:
    """A validated export: build it with :meth:`build`, never field by field."""

    loaded: Loaded
    out: Path
    jobs: tuple[Job, ...]
    skipped: tuple[str, ...]
    shape: str
    verify: str
    users: tuple[str, ...]
    names: dict[Job, list[str]]  # per job, each user's file (or package folder) name
    seeds: Path | None
    overwrite: bool
    chunk: int

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def sampled(self) -> set[int]:
        return set(sample_indices(self.n_users, self.verify))

    @classmethod
    def build(cls, loaded: Loaded, n_users: int, out: str | Path, *, formats: list[str] | tuple[str, ...],
              precisions: list[str] | tuple[str, ...], shape: str, verify: str, seeds_file: str | Path | None,
              user_prefix: str, overwrite: bool, chunk: int, user_ids: list[str] | None) -> "IssuePlan":
        if n_users < 1:
            raise ExportError("number of users must be >= 1")
        if shape not in SHAPES:
            raise ExportError(f"shape must be 'fixed' or 'dynamic', got {shape!r}")
        if verify not in VERIFY_MODES:
            raise ExportError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
        jobs, skipped = plan_jobs(formats, precisions)
        out = Path(out)
        seeds = Path(seeds_file) if seeds_file else None
        if seeds is not None:
            _check_seeds(seeds, out, overwrite)
        width = max(4, len(str(n_users - 1)))
        users = list(user_ids) if user_ids is not None else [f"{user_prefix}{i:0{width}d}" for i in range(n_users)]
        if len(users) != n_users or len(set(users)) != n_users:
            raise ExportError("user_ids must hold n_users distinct names")
        names = {j: [j.row.file_name(u, j.precision) for u in users] for j in jobs}
        return cls(loaded, out, tuple(jobs), tuple(skipped), shape, verify, tuple(users), names, seeds, overwrite,
                   chunk)


def _check_seeds(seeds: Path, out: Path, overwrite: bool) -> None:
    # The seeds file holds every user's secret latent: never overwritten, never handed out with the models.
    if seeds.exists() and not overwrite:
        raise ExportError(f"seeds file {seeds} already exists; it holds users' secrets and is never overwritten")
    if Path(os.path.abspath(out)) in Path(os.path.abspath(seeds)).parents:
        raise ExportError("keep the seeds file outside the output folder: it holds users' secrets, "
                          "the model files are handed out")
    if not seeds.parent.is_dir():
        raise ExportError(f"folder of the seeds file does not exist: {seeds.parent}")
