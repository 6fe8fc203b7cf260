"""Several PSP worker processes on one database (SQLite file and PostgreSQL): the invariants
that concurrency can break hold across processes — the near-duplicate check, per-account and
per-client issuance limits, the per-client registration limit, the key file created by
workers starting at once — and `hyperobf serve --workers 2` serves with them.

The worker side lives in psp_multiproc.py; a barrier makes the workers reach the racy step
together, so each test fails against code that does not serialize them (checked by hand
against the previous issuance code: the near-duplicate, per-client and registration rounds
all let two through on PostgreSQL, and the key race raised FileExistsError).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from cryptography.fernet import Fernet
from psp_support import make_service
from sqlalchemy import select

import psp_multiproc
from hyperobf.export.secrets_z import secure_normal
from hyperobf.psp.db import Account, IssuedNet
from hyperobf.psp.fingerprint import from_bytes

CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _spawn(target, per_worker: list[tuple], timeout: float = 240.0) -> dict[int, object]:  # noqa: ANN001
    """Run target(*args, barrier, results) in one spawned process per args tuple; {pid: result}."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(per_worker)), ctx.Queue()
    old = {k: os.environ.get(k) for k in CHILD_ENV}
    os.environ.update(CHILD_ENV)  # the children inherit it: one thread each on a small machine
    try:
        procs = [ctx.Process(target=target, args=(*a, barrier, results)) for a in per_worker]
        for p in procs:
            p.start()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    out = {}
    try:
        for _ in procs:
            pid, res = results.get(timeout=timeout)
            assert not (isinstance(res, str) and res.startswith("error")), res
            out[pid] = res
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return out


def _accounts(svc, n: int) -> list[int]:  # noqa: ANN001
    public = [svc.create_account({}, f"10.9.0.{i}")[0] for i in range(n)]
    with svc.sessions() as s:
        return [s.execute(select(Account.id).where(Account.public_id == p)).scalar_one() for p in public]


def test_invariants_hold_across_two_worker_processes(psp_engine, tiny_checkpoint, db_url):  # noqa: ANN001
    setup = make_service(psp_engine, db_url)  # migrates; the accounts come from other addresses
    a, b1, b2, c1, c2 = _accounts(setup, 5)
    setup.sessions.kw["bind"].dispose()
    cfg = {"min_distance": 0.01, "max_active_per_account": 1, "max_issued_per_client": 1,
           "max_accounts_per_client": 1, "max_wait_ms": 0.0}
    z0 = secure_normal(1, psp_engine.z_dim)[0].tolist()  # both workers draw this latent first
    key = Fernet.generate_key()

    def rounds(i: int) -> list:
        return [("issue", [((b1, b2)[i], f"dup-client-{i}")]),  # same net drawn in both workers
                ("issue", [(a, f"acct-client-{i}")]),  # one account, active limit 1
                ("issue", [((c1, c2)[i], "one-client")]),  # two accounts, one address, client limit 1
                ("register", 1)]  # one address registering in both, account limit 1

    out = _spawn(psp_multiproc.worker, [(str(tiny_checkpoint), db_url, key, cfg, rounds(i), z0) for i in range(2)])
    dup, acct, client, reg = ([res[r] for res in out.values()] for r in range(4))

    # near-duplicate: both nets issued, the later one re-drawn against the other worker's net
    assert [r[0][0] for r in dup] == ["ok", "ok"], dup
    assert sorted(r[0][2] for r in dup) == [1, 2], dup
    with setup.sessions() as s:
        rows = {r.model_id: r for r in s.execute(select(IssuedNet)).scalars()}
    fps = [from_bytes(rows[r[0][1]].fingerprint) for r in dup]
    assert np.linalg.norm(fps[0] - fps[1]) >= 0.01
    # per-account and per-client limits: exactly one of the two racing requests gets a net
    for name, res in (("account", acct), ("client", client), ("registration", reg)):
        kinds = sorted(r[0][0] for r in res)
        assert kinds == ["LimitExceeded", "ok"], (name, res)
    with setup.sessions() as s:
        per_account = {acc: s.scalar(select(IssuedNet.id).where(IssuedNet.account_id == acc).limit(1)) is not None
                       for acc in (a, c1, c2)}
        registered = s.execute(select(Account).where(Account.subject == "open", Account.id > c2)).all()
    assert per_account[a] and per_account[c1] + per_account[c2] == 1
    assert len(rows) == 4 and len(registered) == 1
    setup.sessions.kw["bind"].dispose()


def test_key_file_created_once_by_racing_workers(tmp_path, monkeypatch):  # noqa: ANN001
    """Six processes load the same missing key file at the same moment, 25 times over: every
    process ends up with the one key on disk, and none fails."""
    monkeypatch.delenv("HYPEROBF_PSP_KEY", raising=False)
    paths = [str(tmp_path / f"k{i}" / "psp.key") for i in range(25)]
    out = _spawn(psp_multiproc.key_worker, [(paths,) for _ in range(6)], timeout=120)
    seen = list(out.values())
    assert all(keys == seen[0] for keys in seen), seen
    for p in paths:
        assert Path(p).stat().st_mode & 0o777 == 0o600 and len(Path(p).read_bytes().split()) == 1
        assert [q.name for q in Path(p).parent.iterdir()] == ["psp.key"]  # no temporary files left


# --- the real command -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """The worker processes under the server (uvicorn spawns them; multiprocessing's resource
    tracker is a child too, and is not a worker)."""
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [k for k in kids if b"spawn_main" in _cmdline(k)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_serve_with_two_workers(tiny_checkpoint, db_url, tmp_path):  # noqa: ANN001
    """`hyperobf serve --workers 2`: two worker processes, one key file (created 0600 before they
    start), limits holding for 12 concurrent requests of one account spread over both."""
    port, key = _free_port(), tmp_path / "keys" / "psp.key"
    conf = tmp_path / "psp.toml"
    conf.write_text(f'[serve]\ndb_url = "{db_url}"\nkey_file = "{key}"\nmax_active_per_account = 2\n'
                    "max_issued_per_account = 20\nmax_wait_ms = 1.0\n")
    env = {**os.environ, **CHILD_ENV, "HYPEROBF_PSP_KEY": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperobf.cli", "serve", "--checkpoint", str(tiny_checkpoint), "--config", str(conf),
         "--port", str(port), "--device", "cpu", "--workers", "2", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while len(_children(proc.pid)) < 2 or not _healthy(base):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.3)
        workers = _children(proc.pid)
        assert len(workers) == 2
        token = httpx.post(f"{base}/v1/accounts", json={}).json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, timeout=60) as c, ThreadPoolExecutor(12) as pool:
            rs = list(pool.map(lambda _: c.post("/v1/masknets", headers=h), range(12)))
            codes = sorted(r.status_code for r in rs)
            nets = c.get("/v1/masknets", headers=h).json()["masknets"]
        assert codes == [201, 201] + [429] * 10, [r.text for r in rs if r.status_code not in (201, 429)]
        assert len(nets) == 2 and len({n["sha256"] for n in nets}) == 2
        assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes().split()) == 1
        assert _children(proc.pid) == workers  # no worker died on the way
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert "Traceback" not in out, out


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
