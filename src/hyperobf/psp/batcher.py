"""Micro-batching: requests that arrive within ``max_wait_ms`` of each other (up to
``max_batch``) share one HyperNet call, one probe evaluation and one transaction.

One worker thread owns the engine (torch is not called from request threads). A request
thread submits a job and waits on its future.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from .errors import Unavailable
from .issuance import IssueJob, Issuer

log = logging.getLogger("hyperobf.psp")


class Batcher:
    def __init__(self, issuer: Issuer, max_batch: int, max_wait_ms: float) -> None:
        self.issuer = issuer
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._q: queue.Queue[IssueJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.batch_sizes: list[int] = []  # for the load test's report

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

    def submit(self, job: IssueJob) -> IssueJob:
        if self._thread is None or self._stopping:
            raise Unavailable("issuance is not running")
        self._q.put(job)
        return job

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            jobs = [first]
            deadline = time.perf_counter() + self.max_wait
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
            if stop:
                return
