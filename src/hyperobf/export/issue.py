"""Issue N users' MaskNets from a trained checkpoint: CSPRNG latents -> batched generation
-> one model file (or package) per user, format and precision -> manifest.jsonl.

Users are processed in chunks: generate the chunk's weights once, then for every
(format, precision) job splice them into that job's template and write the files. All files
go into a staging folder inside ``out`` and are renamed into place only when everything was
written, read back and verified; any failure leaves ``out`` as it was.
"""

from __future__ import annotations

import errno
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..model_meta import PREFIX, build_metadata
from ..train.checkpoint import Loaded
from .formats import FORMATS, PRECISIONS, SHAPES, FormatRow
from .registry import make_template, verifier
from .secrets_z import new_model_id, secure_normal
from .verify import ExportError, VerifyInputs, make_inputs, reference
from .writer import Staging, _write_file

MANIFEST = "manifest.jsonl"
VERIFY_MODES = ("sample", "all", "none")


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


@dataclass(frozen=True)
class Job:
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


@torch.no_grad()
def generate_users(loaded: Loaded, z: np.ndarray, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Batched weights for users with latents z: {name: (n, *shape)} float32 numpy."""
    src = loaded.source
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(z), chunk):
        params = src.issue(torch.from_numpy(np.ascontiguousarray(z[i:i + chunk])))
        for k, v in params.items():
            out.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in out.items()}


def sample_indices(n: int, verify: str) -> list[int]:
    if verify == "all":
        return list(range(n))
    if verify == "sample":
        return sorted({0, n // 2, n - 1})
    return []


def _merge(a: dict | None, b: dict) -> dict:
    """Combine two verification summaries of one job (chunks): sums of counts, worst of errors."""
    if a is None:
        return dict(b)
    out = dict(a)
    for k, v in b.items():
        if k == "users_checked":
            out[k] = a.get(k, 0) + v
        elif isinstance(v, float):
            out[k] = max(a.get(k, 0.0), v)
    return out


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
    over several HyperNets (:mod:`.mixed`).

    ``torch_threads``: torch's thread count while issuing (restored afterwards). 1 by default:
    the writer threads keep the other core busy, and on a shared machine one torch thread is
    several times faster than two that wait for each other (None: leave torch's setting).
    """
    previous = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    try:
        return _issue(loaded, n_users, out, formats, precisions, shape, verify, verify_inputs, verify_faces,
                      seeds_file, user_prefix, overwrite, chunk, progress, user_ids)
    finally:
        torch.set_num_threads(previous)


def _issue(loaded, n_users, out, formats, precisions, shape, verify, verify_inputs, verify_faces, seeds_file,
           user_prefix, overwrite, chunk, progress, user_ids=None) -> IssueReport:
    if n_users < 1:
        raise ExportError("number of users must be >= 1")
    if shape not in SHAPES:
        raise ExportError(f"shape must be 'fixed' or 'dynamic', got {shape!r}")
    if verify not in VERIFY_MODES:
        raise ExportError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
    jobs, skipped = plan_jobs(formats, precisions)
    out, spec = Path(out), loaded.spec
    seeds = Path(seeds_file) if seeds_file else None
    if seeds is not None:
        if seeds.exists() and not overwrite:
            raise ExportError(f"seeds file {seeds} already exists; it holds users' secrets and is never overwritten")
        if Path(os.path.abspath(out)) in Path(os.path.abspath(seeds)).parents:
            raise ExportError("keep the seeds file outside the output folder: it holds users' secrets, "
                              "the model files are handed out")
        if not seeds.parent.is_dir():
            raise ExportError(f"folder of the seeds file does not exist: {seeds.parent}")
    width = max(4, len(str(n_users - 1)))
    users = list(user_ids) if user_ids is not None else [f"{user_prefix}{i:0{width}d}" for i in range(n_users)]
    if len(users) != n_users or len(set(users)) != n_users:
        raise ExportError("user_ids must hold n_users distinct names")
    names = {j: [j.row.file_name(u, j.precision) for u in users] for j in jobs}

    t0 = time.perf_counter()
    if isinstance(verify_inputs, np.ndarray):
        inputs = VerifyInputs({"inputs": verify_inputs.astype(np.float32)}, "caller-supplied inputs")
    elif isinstance(verify_inputs, VerifyInputs):
        inputs = verify_inputs
    else:
        inputs = make_inputs(spec, shape, verify_faces) if verify != "none" else None
    try:
        staging = Staging(out, overwrite)
    except OSError as e:
        raise _os_error(e, out) from None
    seeds_tmp: Path | None = None
    # generate: HyperNet; render: splice + submit writes; write_wait: waiting for the writer threads;
    # verify: time spent by the verifier thread (overlapped); verify_wait: the wait for it at the end
    seconds = {"generate": 0.0, "templates": 0.0, "render": 0.0, "write_wait": 0.0, "verify": 0.0}
    verify_pool = ThreadPoolExecutor(1, thread_name_prefix="hyperobf-verify")
    try:
        staging.check_free([n for j in jobs for n in names[j]] + [MANIFEST])
        z = secure_normal(n_users, loaded.source.z_dim)  # (n, z_dim) from os.urandom
        ids = [new_model_id() for _ in range(n_users)]

        t = time.perf_counter()
        templates, checks = {}, {}
        for j in jobs:
            meta = build_metadata(spec, "", loaded.sha256, method=loaded.config.method, shape=shape,
                                  precision=j.precision, protection=loaded.payload.get("protection"))
            meta[PREFIX + "format"] = json.dumps(j.row.name)
            templates[j] = make_template(j.row, spec, shape, meta, j.precision)
            checks[j] = _template_checks(templates[j], shape) if verify != "none" else {}
        seconds["templates"] = time.perf_counter() - t

        sample = set(sample_indices(n_users, verify))
        results: dict[Job, list[tuple[str, int]]] = {j: [] for j in jobs}
        job_seconds = {j: 0.0 for j in jobs}
        verified: dict[Job, dict | None] = {j: None for j in jobs}
        in_flight = None  # the previous chunk: its writes run while the next chunk is generated
        buffers: dict[tuple[Job, int], dict] = {}  # two render buffers per job, alternating by chunk
        checks_pending: list = []  # verification futures, one per chunk holding sampled users

        def verify_chunk(chosen: list[int], sub: dict[str, np.ndarray]) -> dict:
            """Full checks of a chunk's sampled users in every job (all formats share the reference)."""
            t = time.perf_counter()
            refs = reference(spec, sub, inputs, dssim=any(j.precision != "fp32" for j in jobs))
            rows = {j: verifier(j.row)(templates[j], [staging.path(names[j][i]) for i in chosen], sub, inputs,
                                       j.label, refs=refs) for j in jobs}
            return {"rows": rows, "seconds": time.perf_counter() - t}

        def finish(chunk_state) -> None:
            """Wait for a chunk's writes, then queue the verification of its sampled users on the
            verifier thread (it overlaps with generating and writing the next chunks)."""
            start, params, pending = chunk_state
            t = time.perf_counter()
            for j, p in pending.items():
                results[j] += p.result()
            seconds["write_wait"] += time.perf_counter() - t
            chosen = [i for i in range(start, start + len(next(iter(params.values())))) if i in sample]
            if chosen:
                local = [i - start for i in chosen]
                checks_pending.append(verify_pool.submit(verify_chunk, chosen, {k: v[local] for k, v in params.items()}))

        for k, start in enumerate(range(0, n_users, chunk)):
            stop = min(n_users, start + chunk)
            t = time.perf_counter()
            params = generate_users(loaded, z[start:stop])  # {name: (k, *shape)} float32
            seconds["generate"] += time.perf_counter() - t
            pending = {}
            for j in jobs:
                t = time.perf_counter()
                tpl = templates[j]
                # buffer k % 2 was last used by chunk k - 2, whose writes finished in the last iteration
                files = tpl.render_batch(tpl.encode(params), ids[start:stop], buffers.get((j, k % 2)))
                buffers[(j, k % 2)] = files
                pending[j] = staging.submit(names[j][start:stop], files)
                job_seconds[j] += time.perf_counter() - t
                seconds["render"] += time.perf_counter() - t
            if in_flight is not None:
                finish(in_flight)
            in_flight = (start, params, pending)
            if progress:
                progress(stop, n_users)
        finish(in_flight)
        t = time.perf_counter()
        for f in checks_pending:  # raises the first failed check (VerificationError / ExportRefused)
            done = f.result()
            seconds["verify"] += done["seconds"]
            for j, row in done["rows"].items():
                verified[j] = _merge(verified[j], row)
        seconds["verify_wait"] = time.perf_counter() - t

        rows = []
        spec_digest = spec.digest()
        for i, user in enumerate(users):
            for j in jobs:
                sha, size = results[j][i]
                rows.append({"user": user, "model_id": ids[i], "file": names[j][i], "format": j.row.name,
                             "precision": j.precision, "shape": shape, "sha256": sha, "bytes": size,
                             "sha256_of": "package-tree" if j.row.is_directory else "file",
                             "structure": spec.name, "spec_digest": spec_digest,
                             "checkpoint_sha256": loaded.sha256, "method": loaded.config.method})
        _write_file(staging.path(MANIFEST), memoryview("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()))
        if seeds is not None:
            seeds_tmp = _write_seeds(seeds, users, ids, z)
        staging.commit(extra=[MANIFEST])
        if seeds_tmp is not None:
            os.replace(seeds_tmp, seeds)
            seeds_tmp = None
    except BaseException as e:
        verify_pool.shutdown(wait=True, cancel_futures=True)
        staging.abort()
        if seeds_tmp is not None:
            seeds_tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _os_error(e, out) from None
        raise
    verify_pool.shutdown(wait=True)
    staging.close()
    seconds["total"] = time.perf_counter() - t0
    report_jobs = []
    for j in jobs:
        total_bytes = sum(s for _, s in results[j])
        report_jobs.append({"label": j.label, "format": j.row.name, "precision": j.precision, "shape": shape,
                            "files": n_users, "bytes": total_bytes, "render_seconds": job_seconds[j]})
    summary = {}
    for j in jobs:
        v = verified[j] or {"users_checked": 0, "note": "not verified (--verify none)"}
        summary[j.label] = {**v, **checks[j]}
    return IssueReport(out, out / MANIFEST, n_users, n_users * len(jobs), seconds, summary, report_jobs, skipped)


def _template_checks(template, shape: str) -> dict:
    """Once per template: onnx.checker (full) and the mobile usability checker for ONNX files."""
    if template.format != "onnx":
        return {}
    import onnx

    from .mobile_check import mobile_usability
    from .verify import VerificationError

    onnx.checker.check_model(onnx.load_from_string(template.template_bytes), full_check=True)
    usability = mobile_usability(template.template_bytes)
    if shape == "fixed" and not usability["verdict"]:
        raise VerificationError(f"onnx {template.precision}: onnxruntime's mobile usability checker rejects the "
                                f"fixed-shape model ({usability})")
    return {"opset": template.opset, "mobile_usability": usability}


def _write_seeds(path: Path, users: list[str], ids: list[str], z: np.ndarray) -> Path:
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
