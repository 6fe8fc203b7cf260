"""The export's chunk pipeline: generate → render → write → verify, chunk by chunk.

Per chunk of users the HyperNet generates the weights once; every (format, precision) job
splices them into its template and hands the files to the staging writer's threads. The
chunk's writes run while the next chunk is generated; then its sampled users are verified
on a verifier thread of their own, overlapping the chunks after it. Nothing here decides
what is exported (:mod:`.plan`) or what the manifest says (:mod:`.manifest`).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np

from ..train.sources import generate_users
from .plan import IssuePlan, Job
from .registry import verifier
from .verify import VerifyInputs, reference
from .writer import Staging


def merge_rows(a: dict | None, b: dict) -> dict:
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


class ChunkPipeline:
    """Runs one plan's chunks through its templates into ``staging``; timings in :attr:`seconds`.

    seconds: generate (HyperNet), render (splice + submit writes), write_wait (waiting for the
    writer threads), verify (time spent by the verifier thread, overlapped) and verify_wait
    (the wait for it at the end).
    """

    def __init__(self, plan: IssuePlan, templates: dict[Job, object], staging: Staging,
                 inputs: VerifyInputs | None, seconds: dict[str, float]) -> None:
        self.plan, self.templates, self.staging, self.inputs = plan, templates, staging, inputs
        self.seconds = seconds
        self.results: dict[Job, list[tuple[str, int]]] = {j: [] for j in plan.jobs}  # (sha256, bytes) per user
        self.job_seconds = {j: 0.0 for j in plan.jobs}
        self.verified: dict[Job, dict | None] = {j: None for j in plan.jobs}
        self._sample = plan.sampled
        self._buffers: dict[tuple[Job, int], dict] = {}  # two render buffers per job, alternating by chunk
        self._checks: list[Future] = []  # verification futures, one per chunk holding sampled users
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hyperobf-verify")

    def run(self, z: np.ndarray, ids: list[str], progress: Callable[[int, int], None] | None = None) -> None:
        """Every chunk of users (latents z, model ids), then the wait for their verification."""
        n, in_flight = self.plan.n_users, None  # the previous chunk: its writes run while the next is generated
        for k, start in enumerate(range(0, n, self.plan.chunk)):
            stop = min(n, start + self.plan.chunk)
            t = time.perf_counter()
            params = generate_users(self.plan.loaded, z[start:stop])  # {name: (k, *shape)} float32
            self.seconds["generate"] += time.perf_counter() - t
            pending = {j: self._render(j, k, params, ids[start:stop], start, stop) for j in self.plan.jobs}
            if in_flight is not None:
                self._finish(*in_flight)
            in_flight = (start, params, pending)
            if progress:
                progress(stop, n)
        self._finish(*in_flight)
        self._collect()

    def _render(self, j: Job, k: int, params: dict[str, np.ndarray], ids: list[str], start: int, stop: int):  # noqa: ANN202
        t = time.perf_counter()
        tpl = self.templates[j]
        # buffer k % 2 was last used by chunk k - 2, whose writes finished in the last iteration
        files = tpl.render_batch(tpl.encode(params), ids, self._buffers.get((j, k % 2)))
        self._buffers[(j, k % 2)] = files
        pending = self.staging.submit(self.plan.names[j][start:stop], files)
        self.job_seconds[j] += time.perf_counter() - t
        self.seconds["render"] += time.perf_counter() - t
        return pending

    def _finish(self, start: int, params: dict[str, np.ndarray], pending: dict) -> None:
        """Wait for a chunk's writes, then queue the verification of its sampled users."""
        t = time.perf_counter()
        for j, p in pending.items():
            self.results[j] += p.result()
        self.seconds["write_wait"] += time.perf_counter() - t
        chosen = [i for i in range(start, start + len(next(iter(params.values())))) if i in self._sample]
        if chosen:
            local = [i - start for i in chosen]
            self._checks.append(self._pool.submit(self._verify, chosen, {k: v[local] for k, v in params.items()}))

    def _verify(self, chosen: list[int], sub: dict[str, np.ndarray]) -> dict:
        """Full checks of a chunk's sampled users in every job (all formats share the reference)."""
        t = time.perf_counter()
        plan = self.plan
        refs = reference(plan.loaded.spec, sub, self.inputs, dssim=any(j.precision != "fp32" for j in plan.jobs))
        rows = {j: verifier(j.row)(self.templates[j], [self.staging.path(plan.names[j][i]) for i in chosen], sub,
                                   self.inputs, j.label, refs=refs) for j in plan.jobs}
        return {"rows": rows, "seconds": time.perf_counter() - t}

    def _collect(self) -> None:
        t = time.perf_counter()
        for f in self._checks:  # raises the first failed check (ReferenceMismatch / ExportRefused)
            done = f.result()
            self.seconds["verify"] += done["seconds"]
            for j, row in done["rows"].items():
                self.verified[j] = merge_rows(self.verified[j], row)
        self.seconds["verify_wait"] = time.perf_counter() - t

    def close(self, cancel: bool = False) -> None:
        """Stop the verifier thread (``cancel``: drop queued checks, after a failure)."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)
