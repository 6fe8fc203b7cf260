"""Issue N users' MaskNets from a trained checkpoint: CSPRNG latents -> batched generation
-> one model file (or package) per user, format and precision -> manifest.jsonl.

The steps live in their own modules: :mod:`.plan` validates the request, :mod:`.pipeline`
generates, renders, writes and verifies chunk by chunk, :mod:`.manifest` records the result.
All files go into a staging folder inside ``out`` and are renamed into place only when
everything was written, read back and verified; any failure leaves ``out`` as it was.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..model_meta import build_metadata
from ..protection import with_alike
from ..train.checkpoint import Loaded
from .errors import ExportError
from .manifest import MANIFEST, manifest_rows, write_manifest, write_seeds
from .pipeline import ChunkPipeline
from .plan import IssuePlan, Job
from .registry import make_template, verify_template
from .secrets_z import new_model_id, secure_normal
from .verify import VerifyInputs, make_inputs
from .writer import Staging

__all__ = ["MANIFEST", "IssueReport", "issue_users"]


@dataclass
class IssueReport:
    out_dir: Path
    manifest: Path
    n_users: int
    files: int
    seconds: dict = field(default_factory=dict)
    verified: dict = field(default_factory=dict)  # job label -> verification summary
    jobs: list = field(default_factory=list)  # per (format, precision): files, bytes, seconds, files/s
    skipped: list = field(default_factory=list)  # requested combinations a format does not support
    # how alike the first users' nets perturb the verification faces (eval.alike; empty without verification)
    alike: dict = field(default_factory=dict)
    # the protection record written into every model (with ``alike`` when measured; None: the checkpoint has none)
    protection: dict | None = None


def _os_error(e: OSError, out: Path) -> ExportError:
    if e.errno == errno.ENOSPC:
        return ExportError(f"no space left on device while writing to {out}; nothing was written")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ExportError(f"cannot write to {out}: {e.strerror}")
    return ExportError(f"cannot write to {out}: {e.strerror or e}")


def issue_users(
    loaded: Loaded, n_users: int, out: str | Path, *, formats: list[str] | tuple[str, ...] = ("onnx",),
    precisions: list[str] | tuple[str, ...] = ("fp32",), shape: str = "fixed", verify: str = "sample",
    verify_inputs: np.ndarray | VerifyInputs | None = None, verify_faces: str | Path | None = None,
    seeds_file: str | Path | None = None, user_prefix: str = "user", overwrite: bool = False,
    chunk: int = 256, progress: Callable[[int, int], None] | None = None, torch_threads: int | None = 1,
    user_ids: list[str] | None = None,
) -> IssueReport:
    """Write one model per user and (format, precision) plus ``manifest.jsonl`` into ``out``.

    ExportError (a ValueError) with a one-line reason on bad arguments, refused variants,
    failed verification or a failed write; ``out`` is then left as it was.

    ``chunk``: users per generation/write round. 256 keeps each round's arrays (~15 MB for structure A)
    under glibc's mmap threshold, so they are reused from the heap instead of being mapped fresh and
    page-faulted every round (1024-user rounds cost ~0.15 s of kernel time per 10^4 users here).

    ``user_ids``: explicit user names (default ``<user_prefix><index>``), e.g. when users are spread
    over several HyperNets (:mod:`.multi_structure`).

    ``torch_threads``: torch's thread count while issuing (restored afterwards). 1 by default:
    the writer threads keep the other core busy, and on a shared machine one torch thread is
    several times faster than two that wait for each other (None: leave torch's setting).
    """
    plan = IssuePlan.build(loaded, n_users, out, formats=formats, precisions=precisions, shape=shape, verify=verify,
                           seeds_file=seeds_file, user_prefix=user_prefix, overwrite=overwrite, chunk=chunk,
                           user_ids=user_ids)
    previous = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    try:
        return _run(plan, _inputs(plan, verify_inputs, verify_faces), progress)
    finally:
        torch.set_num_threads(previous)


def _inputs(plan: IssuePlan, given: np.ndarray | VerifyInputs | None, faces: str | Path | None) -> VerifyInputs | None:
    """The images verified users are run on (caller's, or random + faces; none without verification)."""
    if isinstance(given, np.ndarray):
        return VerifyInputs({"inputs": given.astype(np.float32)}, "caller-supplied inputs")
    if isinstance(given, VerifyInputs):
        return given
    return make_inputs(plan.loaded.spec, plan.shape, faces) if plan.verify != "none" else None


def _templates(plan: IssuePlan, protection: dict | None) -> tuple[dict[Job, object], dict[Job, dict]]:
    """Each job's template (self-checked by the registry) and, when verifying, its format's
    once-per-template report (e.g. ONNX: onnx.checker and the mobile usability checker)."""
    loaded = plan.loaded
    templates, checks = {}, {}
    for j in plan.jobs:
        meta = build_metadata(loaded.spec, "", loaded.sha256, method=loaded.config.method, shape=plan.shape,
                              precision=j.precision, protection=protection, model_format=j.row.name,
                              budget_fill=loaded.config.ship_fill)
        templates[j] = make_template(j.row, loaded.spec, plan.shape, meta, j.precision)
        checks[j] = verify_template(j.row, templates[j], plan.shape) if plan.verify != "none" else {}
    return templates, checks


def _run(plan: IssuePlan, inputs: VerifyInputs | None, progress: Callable[[int, int], None] | None) -> IssueReport:
    t0 = time.perf_counter()
    try:
        staging = Staging(plan.out, plan.overwrite)
    except OSError as e:
        raise _os_error(e, plan.out) from None
    seconds = {"generate": 0.0, "templates": 0.0, "render": 0.0, "write_wait": 0.0, "verify": 0.0}
    seeds_tmp: Path | None = None
    pipeline: ChunkPipeline | None = None
    try:
        staging.check_free([n for j in plan.jobs for n in plan.names[j]] + [MANIFEST])
        z = secure_normal(plan.n_users, plan.loaded.source.z_dim)  # (n, z_dim) from os.urandom
        ids = [new_model_id() for _ in range(plan.n_users)]
        # measured before writing, so that every model's record says whether its users' nets perturb alike
        alike = _alike(plan, z, inputs)
        protection = plan.loaded.payload.get("protection")
        if alike:
            protection = with_alike(protection, alike, f"{inputs.faces_source}, first {alike['nets']} users of this "
                                    "export", "hyperobf export")
        t = time.perf_counter()
        templates, checks = _templates(plan, protection)
        seconds["templates"] = time.perf_counter() - t
        pipeline = ChunkPipeline(plan, templates, staging, inputs, seconds)
        pipeline.run(z, ids, progress)
        write_manifest(staging.path(MANIFEST), manifest_rows(plan, ids, pipeline.results))
        if plan.seeds is not None:
            seeds_tmp = write_seeds(plan.seeds, plan.users, ids, z)
        staging.commit(extra=[MANIFEST])
        if seeds_tmp is not None:
            os.replace(seeds_tmp, plan.seeds)
            seeds_tmp = None
    except BaseException as e:
        if pipeline is not None:
            pipeline.close(cancel=True)
        staging.abort()
        if seeds_tmp is not None:
            seeds_tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _os_error(e, plan.out) from None
        raise
    pipeline.close()
    staging.close()
    seconds["total"] = time.perf_counter() - t0
    report = _report(plan, pipeline, checks, seconds)
    report.alike, report.protection = alike, protection
    return report


ALIKE_USERS = 32  # users whose nets are compared (496 pairs; 8–10 missed a HyperNet giving one δ to 83% of users)


def _alike(plan: IssuePlan, z: np.ndarray, inputs: VerifyInputs | None) -> dict:
    """Output similarity of the first ALIKE_USERS users' nets on the verification faces: per-user nets that
    perturb faces identically are one net to an attacker (measured on a trained HyperNet: every user the same δ)."""
    if inputs is None or "faces" not in inputs.groups or len(z) < 2:
        return {}
    from ..eval.alike import issued_similarity

    return issued_similarity(plan.loaded, torch.as_tensor(z[:ALIKE_USERS]), torch.from_numpy(inputs.faces))


def _report(plan: IssuePlan, pipeline: ChunkPipeline, checks: dict[Job, dict], seconds: dict) -> IssueReport:
    jobs, summary = [], {}
    for j in plan.jobs:
        jobs.append({"label": j.label, "format": j.row.name, "precision": j.precision, "shape": plan.shape,
                     "files": plan.n_users, "bytes": sum(s for _, s in pipeline.results[j]),
                     "render_seconds": pipeline.job_seconds[j]})
    for j in plan.jobs:
        v = pipeline.verified[j] or {"users_checked": 0, "note": "not verified (--verify none)"}
        summary[j.label] = {**v, **checks[j]}
    return IssueReport(plan.out, plan.out / MANIFEST, plan.n_users, plan.n_users * len(plan.jobs), seconds, summary,
                       jobs, list(plan.skipped))
