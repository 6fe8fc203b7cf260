"""The PSP server side of the load benchmarks (bench_psp_load.py, bench_psp_profile.py): a throw-away
checkpoint, the TOML config with limits raised for the test accounts, `hyperobf serve` (one or
several worker processes) on 127.0.0.1 only, and the CPU time of its whole process tree."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"  # loopback only, by construction: there is no option to change it
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_checkpoint(structure: str, out: Path) -> Path:
    """A HyperNet trained for one step: generation cost does not depend on the weights."""
    from hyperobf.train.config import TrainConfig
    from hyperobf.train.loop import train

    cfg = TrainConfig(structure=structure, epochs=1, steps_per_epoch=1, batch_images=2, nets_per_step=2)
    return train(cfg, out).checkpoint


def loopback_pg(url: str) -> str:
    from sqlalchemy.engine import make_url

    host = make_url(url).host or ""
    if host not in LOOPBACK_NAMES:
        raise SystemExit(f"refusing PostgreSQL at {host!r}: the load test talks to loopback only")
    return url


def reset_pg(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def write_config(path: Path, checkpoint: Path, db_url: str, max_batch: int, max_wait_ms: float, device: str,
                 accounts: int, nets: int = 10 ** 6) -> None:
    path.write_text(
        "[serve]\n"
        f'checkpoint = "{checkpoint}"\ndb_url = "{db_url}"\ndevice = "{device}"\n'
        # limits raised for the load-test accounts (all on one address)
        f"max_active_per_account = {nets}\nmax_issued_per_account = {nets}\nmax_issued_per_client = {nets}\n"
        f"max_accounts_per_client = {accounts + 100}\n"
        f"max_batch = {max_batch}\nmax_wait_ms = {max_wait_ms}\n")


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return out


class Server:
    """`python -m hyperobf.cli serve` on HOST:port in a subprocess (``workers`` uvicorn workers)."""

    def __init__(self, config: Path, port: int, workdir: Path, workers: int = 1) -> None:
        from cryptography.fernet import Fernet

        env = {**os.environ, "HYPEROBF_PSP_KEY": Fernet.generate_key().decode()}
        self.log = open(workdir / f"server-{port}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hyperobf.cli", "serve", "--config", str(config), "--host", HOST,
             "--port", str(port), "--log-level", "warning", "--workers", str(workers)], env=env, stdout=self.log,
            stderr=subprocess.STDOUT)
        self.base = f"http://{HOST}:{port}"
        self.workers = workers

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.base}/v1/health", timeout=2).status_code == 200 and \
                        (self.workers == 1 or len(_tree(self.proc.pid)) > self.workers):
                    time.sleep(1.0 if self.workers > 1 else 0)  # every worker listening
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise SystemExit("server did not come up")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the server's processes (supervisor and workers) have used so far."""
        total = 0.0
        try:
            for pid in _tree(self.proc.pid):
                try:
                    total += _proc_cpu(pid)
                except OSError:
                    pass  # exited meanwhile
        except (ValueError, IndexError):
            return None
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
