"""CPU of the PSP's issuance batch itself, without HTTP or a load generator: `Issuer.process` on
micro-batches of a fixed size (token check, limits, HyperNet, fingerprint and near-duplicate
check, render, seal, recording transaction), per net and per stage, with SQLite and PostgreSQL.

The load test (bench_psp_load.py) measures the whole server, but the batch sizes it sees follow
from how fast its starved client sends; this one fixes the batch size, so two versions of the
code can be compared on one busy machine. Run it against another checkout with
PYTHONPATH=<checkout>/src:<checkout> and --label:

    python benchmarks/bench_psp_batch.py --checkpoint run/checkpoint.pt --name psp_batch
    PYTHONPATH=old/src:old python benchmarks/bench_psp_batch.py --checkpoint ... --label old --out /tmp

CPU is this thread's CPU time (time.thread_time) around each stage; stages nest (record_tx
includes its index sync); fingerprint = the engine's generate call minus the HyperNet in it. The database is fresh per batch size (its history is the warm-up).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import loadavg, print_table, write_json  # noqa: E402

STAGES = {"_authenticate": "auth", "_precheck": "limits_precheck", "_render": "render", "_seal": "seal",
          "_record": "record_tx", "sync_index": "index_sync"}


def _timed(obj: object, name: str, label: str, acc: Counter) -> None:
    f = getattr(obj, name)

    @functools.wraps(f)
    def g(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        t = time.thread_time()
        try:
            return f(*a, **kw)
        finally:
            acc[label] += time.thread_time() - t

    setattr(obj, name, g)


def run(ckpt: Path, db_url: str, batch: int, nets: int, warmup: int) -> dict:
    import hyperobf.psp.engine as engine_mod
    from cryptography.fernet import Fernet

    from hyperobf.psp.api import build_service
    from hyperobf.psp.config import PSPConfig
    from hyperobf.psp.crypto import SecretBox, token_hash
    from hyperobf.psp.engine import GenerationEngine, Variant
    from hyperobf.psp.issuance import IssueJob

    many = 10 ** 6
    cfg = PSPConfig(checkpoint=str(ckpt), db_url=db_url, device="cpu", max_active_per_account=many,
                    max_issued_per_account=many, max_issued_per_client=many, max_accounts_per_client=1000)
    engine = GenerationEngine.from_checkpoint(ckpt, "cpu")
    svc = build_service(cfg, engine=engine, box=SecretBox([Fernet.generate_key()]))
    tokens = [token_hash(svc.create_account({}, "10.0.0.1")[1]) for _ in range(32)]
    client = svc.box.client_hash("10.0.0.1")
    variant = Variant(cfg.default_format, cfg.default_precision, cfg.default_shape)
    acc: Counter = Counter()
    for name, label in STAGES.items():
        _timed(svc.issuer, name, label, acc)
    _timed(engine_mod, "generate_users", "hypernet", acc)
    _timed(engine, "generate", "generate", acc)  # HyperNet + fingerprint (a call's __call__ cannot be wrapped)

    def one(i: int) -> None:
        jobs = [IssueJob(None, client, variant, token_sha256=tokens[(i * batch + j) % len(tokens)])
                for j in range(batch)]
        svc.issuer.process(jobs)
        for j in jobs:
            j.future.result(timeout=60)

    rounds = max(1, nets // batch)
    for i in range(max(1, warmup // batch)):
        one(i)
    acc.clear()
    t = time.thread_time()
    for i in range(rounds):
        one(i)
    cpu = time.thread_time() - t
    svc.sessions.kw["bind"].dispose()
    n = rounds * batch
    acc["fingerprint"] = acc.pop("generate") - acc["hypernet"]
    return {"batch": batch, "nets": n, "cpu_ms_per_net": round(cpu * 1e3 / n, 3),
            "stages_ms_per_net": {k: round(v * 1e3 / n, 3) for k, v in sorted(acc.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--batches", default="1,5,16")
    ap.add_argument("--nets", type=int, default=240, help="nets timed per batch size")
    ap.add_argument("--warmup", type=int, default=64, help="nets issued first (the index, caches, the history)")
    ap.add_argument("--pg-url", default=os.environ.get("HYPEROBF_TEST_PG_URL", ""))
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--name", default="psp_batch")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # CPU time is the measure; one thread keeps it comparable
    from benchmarks.bench_psp_load import uptime
    from benchmarks.bench_psp_server import loopback_pg, reset_pg

    start = {"uptime": uptime(), "loadavg": loadavg()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="psp-batch-") as work:
        for db in ["sqlite"] + (["postgresql"] if args.pg_url else []):
            for b in [int(x) for x in args.batches.split(",")]:
                if db == "postgresql":
                    url = loopback_pg(args.pg_url)
                    reset_pg(url)
                else:
                    url = f"sqlite:///{Path(work) / f'b{b}.db'}"
                r = run(args.checkpoint, url, b, args.nets, args.warmup)
                rows.append({"code": args.label, "db": db, **r})
                print(f"{args.label} {db} batch {b}: {r['cpu_ms_per_net']} ms per net {r['stages_ms_per_net']}",
                      file=sys.stderr)
    import hyperobf

    payload = {"benchmark": "psp_batch", "code": args.label, "hyperobf_path": str(Path(hyperobf.__file__).parent),
               "checkpoint": str(args.checkpoint), "runs": rows, "start": start, "load_start": start["loadavg"],
               "end": {"uptime": uptime(), "loadavg": loadavg()}, "load_end": loadavg()}
    path = write_json(args.name, payload, args.out)
    print_table(rows, ["code", "db", "batch", "nets", "cpu_ms_per_net"], title="Issuer.process CPU per net")
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
