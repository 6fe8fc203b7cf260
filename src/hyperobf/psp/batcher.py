"""Micro-batching: requests that arrive within ``max_wait_ms`` of each other (up to
``max_batch``) share one HyperNet call, one probe evaluation and one transaction.

A batch costs ~10 ms of CPU however few nets it holds (the HyperNet's weights and the
fingerprint projection are read from memory once per batch; each transaction has its fixed
round trips), each net ~2 ms more: under load, waiting for company is what keeps the CPU per
issuance down. The first request of a batch therefore waits up to ``max_wait_ms`` only when
others are likely to join it: the arrival rate (averaged over about a second) times the window
is at least JOIN_EXPECTED. A request to an idle or lightly used service starts at once.

One worker thread owns the engine (torch is not called from request threads). A request
thread submits a job and waits on its future.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time

from .errors import Unavailable
from .issuance import IssueJob, Issuer

log = logging.getLogger("hyperobf.psp")

RATE_S = 1.0  # time constant (s) of the arrival-rate estimate that opens the batching window
# Requests expected to arrive within the window for it to open: 0.5 = 20 requests/s at 25 ms. At
# 1 the window stayed shut at the ~35 requests/s a starved load generator sends, and batches of
# one or two cost twice the CPU per net (benchmarks/results/psp_profile.txt, issue 16).
JOIN_EXPECTED = 0.5


class Batcher:
    def __init__(self, issuer: Issuer, max_batch: int, max_wait_ms: float) -> None:
        self.issuer = issuer
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._q: queue.Queue[IssueJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.batch_sizes: list[int] = []  # for the load test's report
        self._lock = threading.Lock()
        self._last_submit = time.perf_counter()
        self._rate = 0.0  # submissions per second, exponentially decayed with time constant RATE_S

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="psp-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._stopping = True
            self._q.put(None)
            self._thread.join(timeout)
            self._thread = None
        # whoever is still waiting gets an answer
        while True:
            try:
                job = self._q.get_nowait()
            except queue.Empty:
                break
            if job is not None and not job.future.done():
                job.future.set_exception(Unavailable("service is shutting down"))
                deliver([job])

    def submit(self, job: IssueJob) -> IssueJob:
        if self._thread is None or self._stopping:
            raise Unavailable("issuance is not running")
        with self._lock:
            now = time.perf_counter()
            self._rate = self._rate * math.exp((self._last_submit - now) / RATE_S) + 1.0 / RATE_S
            self._last_submit = now
        self._q.put(job)
        return job

    def arrival_rate(self) -> float:
        """Recent submissions per second (decayed to now)."""
        with self._lock:
            return self._rate * math.exp((self._last_submit - time.perf_counter()) / RATE_S)

    def window(self) -> float:
        """How long a batch's first request waits for others (s): ``max_wait_ms`` when others are
        likely to arrive within it, else 0 (do not delay a request nobody will join)."""
        return self.max_wait if self.arrival_rate() * self.max_wait >= JOIN_EXPECTED else 0.0

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            jobs = [first]
            deadline = time.perf_counter() + self.window()
            stop = False
            while len(jobs) < self.max_batch:
                left = deadline - time.perf_counter()
                try:
                    job = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            self.batch_sizes.append(len(jobs))
            self.issuer.process(jobs)  # resolves every future, never raises
            deliver(jobs)
            if stop:
                return


def deliver(jobs: list[IssueJob]) -> None:
    """Hand resolved jobs to the async requests waiting on them: one thread-safe call per event
    loop and batch, not one wake-up of the loop per request (asyncio.wrap_future's way)."""
    by_loop: dict = {}
    for j in jobs:
        if j.waiter is not None:
            by_loop.setdefault(j.waiter.get_loop(), []).append(j)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_wake, group)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _wake(jobs: list[IssueJob]) -> None:
    """(On the event loop.) Copy each job's outcome to its waiter, unless the request stopped
    waiting (timed out, disconnected)."""
    for j in jobs:
        if not j.waiter.done():
            e = j.future.exception()
            if e is None:
                j.waiter.set_result(j.future.result())
            else:
                j.waiter.set_exception(e)
