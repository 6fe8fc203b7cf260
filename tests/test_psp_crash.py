"""Crash safety of the PSP (`hyperobf serve`, SQLite and PostgreSQL): SIGKILL the server in the
middle of a load run, start it again on the same database and key, and check that

- every request answered 201 has its row, listed to its owner and downloadable (sha256 as
  answered), so nothing the user was promised is lost;
- no row exists without a file its owner can fetch (an orphan): the encrypted file is in the
  same row, written in the same transaction as the one the 201 waits for;
- nothing was issued twice: model ids, files and fingerprints are all distinct, and the rows
  beyond the 201s are at most the requests that were in flight when the server died (their
  responses were lost; the nets are listed to their owners);
- the restarted server issues again.

The counts are printed (pytest -s) for the record.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, func, select

from hyperobf.psp.db import IssuedNet

CONCURRENCY = 16
ACCOUNTS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(checkpoint, conf, port: int, key: str) -> subprocess.Popen:  # noqa: ANN001
    env = {**os.environ, "HYPEROBF_PSP_KEY": key, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperobf.cli", "serve", "--checkpoint", str(checkpoint), "--config", str(conf),
         "--port", str(port), "--device", "cpu", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "server did not come up"
        time.sleep(0.2)


def test_sigkill_mid_load_loses_and_duplicates_nothing(tiny_checkpoint, db_url, tmp_path):  # noqa: ANN001
    port, key = _free_port(), Fernet.generate_key().decode()
    conf = tmp_path / "psp.toml"
    conf.write_text(f'[serve]\ndb_url = "{db_url}"\nmax_active_per_account = 1000\nmax_issued_per_account = 1000\n'
                    "max_issued_per_client = 10000\nmax_accounts_per_client = 100\nmax_wait_ms = 2.0\n")
    base = f"http://127.0.0.1:{port}"
    proc = _start(tiny_checkpoint, conf, port, key)
    try:
        tokens = [httpx.post(f"{base}/v1/accounts", json={}).json()["token"] for _ in range(ACCOUNTS)]
        headers = [{"Authorization": f"Bearer {t}"} for t in tokens]
        sent, issued, failed = [0], [], []  # issued: (account index, 201 body)
        lock, stop = threading.Lock(), threading.Event()

        def load(w: int) -> None:
            with httpx.Client(base_url=base, timeout=30) as c:
                i = w
                while not stop.is_set():
                    with lock:
                        sent[0] += 1
                    try:
                        r = c.post("/v1/masknets", headers=headers[i % ACCOUNTS])
                    except httpx.TransportError as e:  # the server died under this request
                        failed.append(type(e).__name__)
                        return
                    with lock:
                        if r.status_code == 201:
                            issued.append((i % ACCOUNTS, r.json()))
                        else:
                            failed.append(r.status_code)
                    i += CONCURRENCY

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            futures = [pool.submit(load, w) for w in range(CONCURRENCY)]
            deadline = time.time() + 60
            while len(issued) < 40 and time.time() < deadline:  # well into the run
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no lifespan exit, mid-transaction for some
            proc.wait(30)
            stop.set()
            for f in futures:
                f.result()
        assert len(issued) >= 40 and all(f != 500 for f in failed), failed
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()

    proc = _start(tiny_checkpoint, conf, port, key)
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            listed = {}
            for a, h in enumerate(headers):
                for net in c.get("/v1/masknets", headers=h).json()["masknets"]:
                    listed[net["model_id"]] = (a, net)
            answered = {b["model_id"]: (a, b) for a, b in issued}
            assert len(answered) == len(issued), "a model id was answered twice"
            for mid, (a, body) in answered.items():  # every 201 has its row, on the right account
                assert mid in listed and listed[mid][0] == a and listed[mid][1]["sha256"] == body["sha256"]
            orphans = 0
            for mid, (a, net) in listed.items():  # every row has a file its owner can fetch
                r = c.get(f"/v1/masknets/{mid}/file", headers=headers[a])
                ok = r.status_code == 200 and r.headers["x-content-sha256"] == net["sha256"] == \
                    hashlib.sha256(r.content).hexdigest()
                orphans += not ok
            assert c.post("/v1/masknets", headers=headers[0]).status_code == 201  # serving again
        engine = create_engine(db_url)
        with engine.connect() as conn:
            rows = conn.execute(select(IssuedNet.model_id, IssuedNet.file_sha256, IssuedNet.fingerprint,
                                       IssuedNet.file_enc.is_(None).label("no_file"))).all()
            n_rows = conn.scalar(select(func.count()).select_from(IssuedNet))
        engine.dispose()
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    rows = [r for r in rows if r.model_id in listed]  # (not the check request after the restart)
    lost_responses = len(listed) - len(answered)
    dup_files = len(rows) - len({r.file_sha256 for r in rows})
    dup_fps = len(rows) - len({bytes(r.fingerprint) for r in rows})
    print(f"\ncrash test ({db_url.split(':')[0].split('+')[0]}): requests sent {sent[0]}, 201s {len(issued)}, rows {len(listed)} "
          f"(responses lost in the kill {lost_responses}), orphans {orphans}, duplicated files {dup_files}, "
          f"duplicated fingerprints {dup_fps}, transport errors {sum(isinstance(f, str) for f in failed)}")
    assert orphans == 0 and not any(r.no_file for r in rows)
    assert dup_files == 0 and dup_fps == 0
    assert len(rows) == len(listed) == n_rows - 1
    # rows beyond the 201s: only requests in flight when the server died (one per load thread at most)
    assert 0 <= lost_responses <= CONCURRENCY
