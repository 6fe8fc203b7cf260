"""Issue 16's CPU work on the issuance batch: one multi-row INSERT per micro-batch, the probe
fingerprint as per-net matrix products on CPU, and a batching window that opens only under
load. Each keeps the invariants of tests/test_psp_security.py inside one batch."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from psp_support import make_service
from sqlalchemy import select

from hyperobf.export.secrets_z import secure_normal
from hyperobf.psp.batcher import Batcher
from hyperobf.psp.db import Account, IssuedNet
from hyperobf.psp.engine import Variant
from hyperobf.psp.errors import Conflict
from hyperobf.psp.fingerprint import from_bytes
from hyperobf.psp.issuance import IssueJob

ONNX = Variant("onnx", "fp32", "fixed")


class RepeatSampler:
    """The scripted latents first (one row per draw), then fresh CSPRNG ones."""

    def __init__(self, *rows: np.ndarray) -> None:
        self.rows = list(rows)

    def __call__(self, n: int, dim: int) -> np.ndarray:
        out = [self.rows.pop(0) if self.rows else secure_normal(1, dim)[0] for _ in range(n)]
        return np.stack(out).astype(np.float32)


def _accounts(svc, n: int) -> list[int]:  # noqa: ANN001
    public = [svc.create_account({}, "10.0.0.1")[0] for _ in range(n)]
    with svc.sessions() as s:
        return [s.execute(select(Account.id).where(Account.public_id == p)).scalar_one() for p in public]


def test_near_duplicate_pair_inside_one_batch_is_redrawn(psp_engine, db_url):  # noqa: ANN001
    """Two jobs of one micro-batch draw the same latent: one keeps it, the other is re-drawn;
    both are recorded by the batch's single INSERT, far enough apart."""
    z0 = secure_normal(1, psp_engine.z_dim)[0]
    svc = make_service(psp_engine, db_url, z_sampler=RepeatSampler(z0, z0.copy()), min_distance=0.01)
    a, b = _accounts(svc, 2)
    jobs = [IssueJob(a, "client", ONNX), IssueJob(b, "client", ONNX)]
    svc.issuer.process(jobs)
    rows = [j.future.result(timeout=10) for j in jobs]
    assert sorted(r.draws for r in rows) == [1, 2] and svc.issuer.stats["redraws"] == 1
    assert rows[0].id != rows[1].id and rows[0].file_sha256 != rows[1].file_sha256
    with svc.sessions() as s:
        stored = {r.model_id: r for r in s.execute(select(IssuedNet)).scalars()}
    assert set(stored) == {r.model_id for r in rows}
    for r in rows:  # what the request got is what was committed
        assert stored[r.model_id].id == r.id and stored[r.model_id].file_enc == r.file_enc
    d = np.linalg.norm(from_bytes(rows[0].fingerprint) - from_bytes(rows[1].fingerprint))
    assert d >= 0.01
    assert svc.issuer.index.last_id == max(r.id for r in rows) and len(svc.issuer.index) == 2


def test_two_rotations_of_one_net_in_one_batch(psp_engine, db_url):  # noqa: ANN001
    """Both jobs of a batch rotate the same net: the first retires it, the second gets 409 and
    writes nothing; the old net names its one replacement."""
    svc = make_service(psp_engine, db_url, max_active_per_account=2)
    (acct,) = _accounts(svc, 1)
    first = IssueJob(acct, "client", ONNX)
    svc.issuer.process([first])
    old = first.future.result(timeout=10).model_id
    jobs = [IssueJob(acct, "client", ONNX, retire=old) for _ in range(2)]
    svc.issuer.process(jobs)
    new = jobs[0].future.result(timeout=10)
    assert isinstance(jobs[1].future.exception(timeout=10), Conflict)
    with svc.sessions() as s:
        rows = {r.model_id: r for r in s.execute(select(IssuedNet)).scalars()}
    assert set(rows) == {old, new.model_id}
    assert rows[old].retired_at is not None and rows[old].replaced_by == new.model_id and rows[old].file_enc is None
    assert rows[new.model_id].retired_at is None


@pytest.mark.parametrize("structure", ["A", "C", "U-small"])
def test_cpu_fingerprint_matches_the_grouped_conv(structure):
    """The per-net matrix products (CPU, full-resolution structures) give the fingerprints the
    grouped conv gives (GPU path, strided structures on CPU, and what fingerprints stored before
    issue 16 were computed with): same version, same values."""
    from hyperobf.models.hypernet import HyperNet
    from hyperobf.models.masknet import grouped_pre_tanh
    from hyperobf.psp.fingerprint import Fingerprinter, gemm_friendly
    from hyperobf.spec import builtin_spec

    spec = builtin_spec(structure)
    assert gemm_friendly(spec) == (structure in ("A", "C"))
    torch.manual_seed(3)
    with torch.no_grad():
        params = HyperNet(spec).generate(5)
        fpr = Fingerprinter()
        b, c, s, _ = fpr.probe.shape
        h = grouped_pre_tanh(spec, params, fpr.probe.repeat(1, 5, 1, 1), 5)
        want = (torch.tanh(h).reshape(b, 5, c, s, s).transpose(0, 1).reshape(5, -1) @ fpr.proj).numpy()
    got = fpr(spec, params)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


class _Recorder:
    """Stands in for the Issuer: records batch sizes, resolves every job."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def process(self, jobs: list[IssueJob]) -> None:
        self.sizes.append(len(jobs))
        for j in jobs:
            j.future.set_result(None)


def test_batch_window_opens_only_under_load():
    """A request to an idle service starts at once; requests arriving faster than max_wait_ms
    wait for one another and share a batch."""
    rec = _Recorder()
    batcher = Batcher(rec, max_batch=64, max_wait_ms=200.0)  # long enough to see on a busy machine
    batcher.start()
    try:
        assert batcher.window() == 0.0  # idle
        t = time.perf_counter()
        batcher.submit(IssueJob(1, "c", ONNX)).future.result(timeout=5)
        assert time.perf_counter() - t < 0.15  # not held for the 200 ms window
        for _ in range(20):  # a burst: ~20 requests per second, 4 expected within the window
            batcher.submit(IssueJob(1, "c", ONNX))
        assert batcher.arrival_rate() > 5 and batcher.window() == pytest.approx(0.2)
        jobs = [batcher.submit(IssueJob(1, "c", ONNX)) for _ in range(5)]
        for j in jobs:
            j.future.result(timeout=5)
        assert max(rec.sizes) > 1 and sum(rec.sizes) == 26
    finally:
        batcher.stop()


def test_async_waiters_woken_per_batch():
    """Async requests wait on event-loop futures that the batcher resolves with one call per
    batch; a request that stopped waiting (cancelled) is skipped, the others get their result."""
    import asyncio

    rec = _Recorder()
    batcher = Batcher(rec, max_batch=64, max_wait_ms=50.0)
    batcher.start()

    async def main() -> list:
        loop = asyncio.get_running_loop()
        jobs = [IssueJob(1, "c", ONNX, waiter=loop.create_future()) for _ in range(4)]
        jobs[0].waiter.cancel()  # gone before its batch was done
        for j in jobs:
            batcher.submit(j)
        return await asyncio.wait_for(asyncio.gather(*(j.waiter for j in jobs[1:])), 5)

    try:
        assert asyncio.run(main()) == [None, None, None]
        assert sum(rec.sizes) == 4
    finally:
        batcher.stop()
