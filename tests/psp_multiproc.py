"""Child-process side of the multi-worker PSP tests (tests/test_psp_workers.py).

Each child is one PSP worker: its own engine, service and connection pool on the shared
database, exactly what `hyperobf serve --workers N` runs. A barrier holds the children just
before the racy step (recording a batch, registering an account, creating the key file), so
they all reach it together and the database (or the file system) has to sort them out.
Functions here are module level so multiprocessing's spawn can import them.
"""

from __future__ import annotations

import os
import traceback


def worker(checkpoint: str, db_url: str, key: bytes, cfg: dict, rounds: list, z0: list | None, barrier,
           results) -> None:  # noqa: ANN001
    """Play ``rounds`` against the database; put (pid, [one result list per round]) on ``results``.

    A round is ("issue", [(account_id, client_hash), ...]) — one micro-batch — or
    ("register", n) — n account creations. The barrier is crossed once per round, right
    before the first recording transaction (issue) or the first verification (register).
    """
    try:
        import numpy as np
        import torch

        torch.set_num_threads(1)
        from hyperobf.psp.api import build_service
        from hyperobf.psp.config import PSPConfig
        from hyperobf.psp.crypto import SecretBox
        from hyperobf.psp.engine import GenerationEngine, Variant
        from hyperobf.psp.issuance import IssueJob
        from hyperobf.psp.verify import OpenVerifier

        engine = GenerationEngine.from_checkpoint(checkpoint, "cpu")
        first = [np.asarray(z0, np.float32)] if z0 is not None else []

        def sampler(n: int, dim: int) -> np.ndarray:  # the scripted latent first, then CSPRNG ones
            from hyperobf.export.secrets_z import secure_normal

            out = secure_normal(n, dim)
            if first:
                out[0] = first.pop()
            return out

        gate = {"armed": False}

        def cross() -> None:
            if gate["armed"]:
                gate["armed"] = False
                barrier.wait(120)

        class GatedVerifier(OpenVerifier):
            def verify(self, evidence, client):  # noqa: ANN001, ANN201
                cross()
                return super().verify(evidence, client)

        svc = build_service(PSPConfig(checkpoint="(engine given)", db_url=db_url, device="cpu", **cfg),
                            engine=engine, box=SecretBox([key]), verifier=GatedVerifier(), z_sampler=sampler)
        record = svc.issuer._record

        def gated_record(sealed):  # noqa: ANN001, ANN202
            cross()
            return record(sealed)

        svc.issuer._record = gated_record
        barrier.wait(120)  # every worker is up before the first round
        played = []
        for kind, arg in rounds:
            gate["armed"] = True
            out = []
            if kind == "issue":
                jobs = [IssueJob(a, c, Variant("onnx", "fp32", "fixed")) for a, c in arg]
                svc.issuer.process(jobs)
                for j in jobs:
                    e = j.future.exception(timeout=120)
                    out.append(("ok", j.future.result().model_id, j.draws) if e is None else
                               (type(e).__name__, str(e), j.draws))
            else:
                from hyperobf.psp.errors import ApiError

                for _ in range(arg):
                    try:
                        out.append(("ok", svc.create_account({}, "198.51.100.9")[0]))
                    except ApiError as e:
                        out.append((type(e).__name__, e.detail))
            played.append(out)
        svc.sessions.kw["bind"].dispose()
        results.put((os.getpid(), played))
    except BaseException:  # noqa: BLE001 - report the child's failure to the test
        results.put((os.getpid(), "error: " + traceback.format_exc()))


def key_worker(paths: list[str], barrier, results) -> None:  # noqa: ANN001
    """Load (creating) each key file in turn, all workers at once per path; report what each read."""
    try:
        from hyperobf.psp.crypto import SecretBox

        keys = []
        for p in paths:
            barrier.wait(60)
            keys.append(SecretBox.load(p).client_hash("probe"))  # derived from the key this worker uses
        results.put((os.getpid(), keys))
    except BaseException:  # noqa: BLE001
        results.put((os.getpid(), "error: " + traceback.format_exc().strip().splitlines()[-1]))
