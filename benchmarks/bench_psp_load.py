"""Load test of the PSP service (`hyperobf serve`) on loopback: issuance latency and throughput.

Starts the real server (uvicorn, one process) in a subprocess on 127.0.0.1 — never any other
address — with limits raised for the test accounts, then drives it with httpx.AsyncClient:
``--requests`` POST /v1/masknets at ``--concurrency`` in flight, spread over ``--accounts``
accounts, then ``--downloads`` file downloads. Runs once per variant: SQLite with micro-batching,
SQLite with batching off (max_batch = 1, the comparison), and PostgreSQL with micro-batching
when --pg-url / $HYPEROBF_TEST_PG_URL points at a loopback server (scripts/ci_postgres.sh).

    python benchmarks/bench_psp_load.py                              # structure A, 1000 requests, 32 in flight
    python benchmarks/bench_psp_load.py --checkpoint run/checkpoint.pt --requests 200

The client and the server share this machine's cores, so the numbers are a lower bound on
what the server alone sustains; the load average is recorded before and after every run.
Generation cost does not depend on the HyperNet's weights: without --checkpoint a HyperNet
trained for one step is used. Writes benchmarks/results/psp_load.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable from a checkout

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import loadavg, print_table, write_json  # noqa: E402

HOST = "127.0.0.1"  # loopback only, by construction: there is no option to change it
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _checkpoint(structure: str, out: Path) -> Path:
    from hyperobf.train.config import TrainConfig
    from hyperobf.train.loop import train

    cfg = TrainConfig(structure=structure, epochs=1, steps_per_epoch=1, batch_images=2, nets_per_step=2)
    return train(cfg, out).checkpoint


def _loopback_pg(url: str) -> str:
    from sqlalchemy.engine import make_url

    host = make_url(url).host or ""
    if host not in LOOPBACK_NAMES:
        raise SystemExit(f"refusing PostgreSQL at {host!r}: the load test talks to loopback only")
    return url


def _reset_pg(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _write_config(path: Path, checkpoint: Path, db_url: str, max_batch: int, args: argparse.Namespace) -> None:
    n = args.requests + args.warmup + 10
    path.write_text(
        "[serve]\n"
        f'checkpoint = "{checkpoint}"\ndb_url = "{db_url}"\ndevice = "{args.device}"\n'
        # limits raised for the load-test accounts (all on one address)
        f"max_active_per_account = {n}\nmax_issued_per_account = {n}\nmax_issued_per_client = {n}\n"
        f"max_accounts_per_client = {args.accounts + 10}\n"
        f"max_batch = {max_batch}\nmax_wait_ms = {args.max_wait_ms}\n")


class Server:
    """`python -m hyperobf.cli serve` on HOST:port in a subprocess."""

    def __init__(self, config: Path, port: int, workdir: Path) -> None:
        from cryptography.fernet import Fernet

        env = {**os.environ, "HYPEROBF_PSP_KEY": Fernet.generate_key().decode()}
        self.log = open(workdir / f"server-{port}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hyperobf.cli", "serve", "--config", str(config), "--host", HOST,
             "--port", str(port), "--log-level", "warning"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://{HOST}:{port}"

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.base}/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise SystemExit("server did not come up")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the server process has used so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def _drive(server: "Server", args: argparse.Namespace) -> dict:
    base = server.base
    limits = httpx.Limits(max_connections=args.concurrency + 4, max_keepalive_connections=args.concurrency + 4)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as c:
        t = time.perf_counter()
        tokens = []
        for _ in range(args.accounts):
            r = await c.post("/v1/accounts", json={})
            r.raise_for_status()
            tokens.append({"Authorization": f"Bearer {r.json()['token']}"})
        t_accounts = time.perf_counter() - t

        async def run(n: int, make) -> tuple[list[float], Counter, float, list]:  # noqa: ANN001
            lat, codes, bodies, nxt = [], Counter(), [], iter(range(n))

            async def worker() -> None:
                for i in nxt:
                    t0 = time.perf_counter()
                    r = await make(i)
                    lat.append(time.perf_counter() - t0)
                    codes[r.status_code] += 1
                    if r.status_code == 201:
                        bodies.append((i, r.json()))

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            return lat, codes, time.perf_counter() - t0, bodies

        def issue(i: int):  # noqa: ANN202
            return c.post("/v1/masknets", headers=tokens[i % len(tokens)], json={"format": "onnx"})

        await run(args.warmup, issue)
        cpu0, own0 = server.cpu_seconds(), _own_cpu()
        lat, codes, wall, bodies = await run(args.requests, issue)
        cpu1, own1 = server.cpu_seconds(), _own_cpu()
        issued = [(tokens[i % len(tokens)], b) for i, b in bodies]

        def download(i: int):  # noqa: ANN202
            h, b = issued[i % len(issued)]
            return c.get(b["download"], headers=h)

        d_lat, d_codes, d_wall, _ = await run(min(args.downloads, len(issued)), download) if issued else \
            ([], Counter(), 0.0, [])
    ms = np.array(lat) * 1e3
    out = {
        "requests": args.requests, "concurrency": args.concurrency, "accounts": args.accounts,
        "status_codes": {str(k): v for k, v in sorted(codes.items())}, "ok": codes.get(201, 0),
        "seconds": round(wall, 3), "throughput_rps": round(args.requests / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
        "account_creation_s": round(t_accounts, 3), "issued_ids": [b["model_id"] for _, b in issued],
        # CPU per issued net, server and load-generating client (both share this machine's cores)
        "server_cpu_ms_per_request": round((cpu1 - cpu0) * 1e3 / args.requests, 2) if cpu0 is not None else None,
        "client_cpu_ms_per_request": round((own1 - own0) * 1e3 / args.requests, 2),
    }
    if d_lat:
        dms = np.array(d_lat) * 1e3
        out["downloads"] = {"n": len(d_lat), "status_codes": {str(k): v for k, v in sorted(d_codes.items())},
                            "throughput_rps": round(len(d_lat) / d_wall, 1),
                            "p50_ms": round(float(np.percentile(dms, 50)), 2),
                            "p99_ms": round(float(np.percentile(dms, 99)), 2)}
    return out


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _batches(db_url: str, model_ids: list[str]) -> dict:
    """Micro-batch sizes as recorded: every net of one batch shares its issued_at."""
    from sqlalchemy import create_engine, select

    from hyperobf.psp.db import IssuedNet

    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(IssuedNet.model_id, IssuedNet.issued_at, IssuedNet.draws)).all()
    engine.dispose()
    wanted = set(model_ids)
    rows = [r for r in rows if r.model_id in wanted]
    sizes = np.array(list(Counter(r.issued_at for r in rows).values()))
    return {"batches": int(len(sizes)), "mean_batch": round(float(sizes.mean()), 2) if len(sizes) else 0.0,
            "max_batch_seen": int(sizes.max()) if len(sizes) else 0,
            "redraws": int(sum(r.draws - 1 for r in rows))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="HyperNet checkpoint (default: structure A, trained 1 step).")
    ap.add_argument("--structure", default="A")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--accounts", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=32)
    ap.add_argument("--downloads", type=int, default=200)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (server side).")
    ap.add_argument("--variants", default="sqlite,sqlite-unbatched,postgresql",
                    help="comma list of sqlite, sqlite-unbatched, postgresql")
    ap.add_argument("--pg-url", default=os.environ.get("HYPEROBF_TEST_PG_URL", ""))
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    if args.requests < 1 or args.concurrency < 1 or args.accounts < 1:
        raise SystemExit("--requests, --concurrency and --accounts must be >= 1")

    work = Path(tempfile.mkdtemp(prefix="psp-load-"))
    try:
        _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # checkpoint, databases, server logs


def _run(args: argparse.Namespace, work: Path) -> None:
    checkpoint = args.checkpoint or _checkpoint(args.structure, work / "ckpt")
    from hyperobf.train.checkpoint import file_sha256, load_checkpoint

    loaded = load_checkpoint(checkpoint)
    runs, skipped = [], {}
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if variant == "postgresql":
            if not args.pg_url:
                skipped[variant] = "no --pg-url / HYPEROBF_TEST_PG_URL (run scripts/ci_postgres.sh)"
                continue
            db_url = _loopback_pg(args.pg_url)
            _reset_pg(db_url)
        elif variant in ("sqlite", "sqlite-unbatched"):
            db_url = f"sqlite:///{work / (variant + '.db')}"
        else:
            raise SystemExit(f"unknown variant {variant!r}")
        max_batch = 1 if variant == "sqlite-unbatched" else args.max_batch
        config = work / f"{variant}.toml"
        _write_config(config, checkpoint, db_url, max_batch, args)
        server = Server(config, _free_port(), work)
        try:
            server.wait_ready()
            load_before = loadavg()
            result = asyncio.run(_drive(server, args))
            load_after = loadavg()
        finally:
            server.stop()
        result.update(_batches(db_url, result.pop("issued_ids")))
        runs.append({"variant": variant, "db": variant.split("-")[0], "max_batch": max_batch,
                     "loadavg_before": load_before, "loadavg_after": load_after, **result})
        print(f"{variant}: {result['throughput_rps']} req/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms",
              file=sys.stderr)

    import torch

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    payload = {
        "benchmark": "psp_load", "host": HOST, "server": "hyperobf serve (uvicorn, 1 process), client httpx.AsyncClient "
        "in the same machine", "server_device": device,
        "checkpoint": {"structure": loaded.spec.name, "sha256": file_sha256(checkpoint),
                       "masknet_params": loaded.spec.num_params(), "trained_for_benchmark": args.checkpoint is None},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "pg_url"},
        "runs": runs, "skipped": skipped,
        "load_start": runs[0]["loadavg_before"] if runs else None, "load_end": runs[-1]["loadavg_after"] if runs else None,
    }
    path = write_json("psp_load", payload, args.out)
    print_table(runs, ["variant", "max_batch", "requests", "concurrency", "ok", "throughput_rps", "p50_ms", "p90_ms",
                       "p99_ms", "max_ms", "mean_batch", "server_cpu_ms_per_request",
                       "client_cpu_ms_per_request"],
                title=f"PSP issuance on loopback ({loaded.spec.name}, server device {device}, {os.cpu_count()} cores)")
    for k, v in skipped.items():
        print(f"skipped {k}: {v}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
