"""Load test of the PSP service (`hyperobf serve`) on loopback: server CPU per issuance, throughput,
latency, errors; then server CPU per download.

Starts the real server (uvicorn; --workers N processes) in a subprocess on 127.0.0.1 — never any
other address — with limits raised for the test accounts, and drives it with httpx.AsyncClient:
--concurrency requests in flight for --duration seconds of POST /v1/masknets (spread over
--accounts accounts, after --warmup issuances), then --download-duration seconds of downloads.
Once per structure (each a HyperNet trained for one step: cost does not depend on the weights)
and per database: SQLite (micro-batching), optionally SQLite with batching off
(sqlite-unbatched), and PostgreSQL when --pg-url / $HYPEROBF_TEST_PG_URL points at a loopback
server (scripts/ci_postgres.sh).

    python benchmarks/bench_psp_load.py                                  # A, 60 s, SQLite + PostgreSQL
    python benchmarks/bench_psp_load.py --structures B,C,D,U,U-small,tiny --duration 15 --variants sqlite \\
        --name psp_load_structures

The client, the server and PostgreSQL share this machine's cores, so throughput and latency are
lower bounds; the server is judged by its CPU time per issuance (all its processes' CPU during
the timed run / issuances). `uptime` and the busiest other processes are recorded before and
after. Writes benchmarks/results/<name>.json and <name>.png and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable from a checkout

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import loadavg, print_table, write_json  # noqa: E402
from hyperobf.psp.config import PSPConfig  # noqa: E402
from benchmarks.bench_psp_server import (HOST, Server, free_port, loopback_pg, make_checkpoint,  # noqa: E402
                                         reset_pg, write_config)

SERVER_LIBS = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "sqlalchemy", "psycopg",
               "cryptography", "httpx", "torch", "onnx")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def busiest_processes(n: int = 4) -> list[str]:
    """The other processes using the most CPU now (command and %CPU), to state what shared the machine."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu", "--no-headers"], capture_output=True,
                             text=True, timeout=5).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return []
    me = {str(os.getpid())}
    return [" ".join(line.split()[:4])[:100] for line in out[:n + 2] if not any(p in line for p in me)][:n]


def _ms(xs: list[float]) -> dict:
    a = np.array(xs) * 1e3
    return {f"p{q}_ms": round(float(np.percentile(a, q)), 2) for q in (50, 90, 99)} | {"max_ms": round(float(a.max()), 2)}


async def _timed(duration: float, concurrency: int, make) -> tuple[list[float], Counter, float, list]:  # noqa: ANN001
    """``concurrency`` loops calling make(i) until ``duration`` has passed; latencies, codes, wall, 2xx bodies."""
    lat, codes, ok, counter = [], Counter(), [], iter(range(10 ** 9))
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            t0 = time.perf_counter()
            try:
                r = await make(i)
            except httpx.HTTPError as e:
                codes[type(e).__name__] += 1
                continue
            lat.append(time.perf_counter() - t0)
            codes[r.status_code] += 1
            if r.status_code == 201:
                ok.append((i, r.json()))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, codes, time.perf_counter() - t0, ok


async def _drive(server: Server, args: argparse.Namespace) -> dict:
    limits = httpx.Limits(max_connections=args.concurrency + 4, max_keepalive_connections=args.concurrency + 4)
    async with httpx.AsyncClient(base_url=server.base, timeout=120, limits=limits) as c:
        tokens = []
        for _ in range(args.accounts):
            r = await c.post("/v1/accounts", json={})
            r.raise_for_status()
            tokens.append({"Authorization": f"Bearer {r.json()['token']}"})

        def issue(i: int):  # noqa: ANN202
            return c.post("/v1/masknets", headers=tokens[i % len(tokens)], json={"format": "onnx"})

        for _ in range(max(1, args.warmup // args.concurrency)):  # templates, pools, index, caches
            await asyncio.gather(*(issue(i) for i in range(args.concurrency)))
        cpu0, own0, load0 = server.cpu_seconds(), _own_cpu(), loadavg()
        lat, codes, wall, ok = await _timed(args.duration, args.concurrency, issue)
        cpu1, own1 = server.cpu_seconds(), _own_cpu()
        issued = [(tokens[i % len(tokens)], b) for i, b in ok]
        n = len(lat)
        out = {"requests": n, "issued": len(ok), "errors": n - len(ok) + sum(v for k, v in codes.items()
                                                                            if isinstance(k, str)),
               "status_codes": {str(k): v for k, v in sorted(codes.items(), key=str)}, "seconds": round(wall, 2),
               "throughput_rps": round(len(ok) / wall, 1), **(_ms(lat) if lat else {}),
               "server_cpu_ms_per_issuance": round((cpu1 - cpu0) * 1e3 / max(1, len(ok)), 3),
               "client_cpu_ms_per_request": round((own1 - own0) * 1e3 / max(1, n), 2),
               "loadavg_during": [load0, loadavg()], "issued_ids": [b["model_id"] for _, b in issued]}
        if issued and args.download_duration > 0:

            def download(i: int):  # noqa: ANN202
                h, b = issued[i % len(issued)]
                return c.get(b["download"], headers=h)

            cpu0 = server.cpu_seconds()
            d_lat, d_codes, d_wall, _ = await _timed(args.download_duration, args.concurrency, download)
            cpu1 = server.cpu_seconds()
            out["file_bytes"] = issued[0][1]["size"]
            out["downloads"] = {"n": len(d_lat), "status_codes": {str(k): v for k, v in d_codes.items()},
                                "errors": sum(v for k, v in d_codes.items() if k != 200),
                                "throughput_rps": round(len(d_lat) / d_wall, 1), **_ms(d_lat),
                                "server_cpu_ms_per_download": round((cpu1 - cpu0) * 1e3 / max(1, len(d_lat)), 3)}
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
            "max_batch_seen": int(sizes.max()) if len(sizes) else 0, "redraws": int(sum(r.draws - 1 for r in rows))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="HyperNet checkpoint (default: one per --structures, 1 step).")
    ap.add_argument("--structures", default="A", help="comma list (ignored with --checkpoint)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of issuance per run")
    ap.add_argument("--download-duration", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--accounts", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (hyperobf serve --workers)")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=PSPConfig.max_wait_ms, help="default: the service's")
    ap.add_argument("--device", default="cpu", help="auto | cpu | cuda (server side).")
    ap.add_argument("--variants", default="sqlite,postgresql", help="comma list of sqlite, sqlite-unbatched, postgresql")
    ap.add_argument("--pg-url", default=os.environ.get("HYPEROBF_TEST_PG_URL", ""))
    ap.add_argument("--name", default="psp_load", help="results file name (JSON and PNG)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    if args.duration <= 0 or args.concurrency < 1 or args.accounts < 1 or args.workers < 1:
        raise SystemExit("--duration, --concurrency, --accounts and --workers must be positive")
    work = Path(tempfile.mkdtemp(prefix="psp-load-"))
    try:
        _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # checkpoints, databases, server logs


def _run(args: argparse.Namespace, work: Path) -> None:
    from hyperobf.train.checkpoint import file_sha256, load_checkpoint

    start = {"uptime": uptime(), "loadavg": loadavg(), "busiest_processes": busiest_processes()}
    structures = [None] if args.checkpoint else [s.strip() for s in args.structures.split(",") if s.strip()]
    runs, skipped, checkpoints = [], {}, {}
    for structure in structures:
        ckpt = args.checkpoint or make_checkpoint(structure, work / f"ckpt-{structure}")
        loaded = load_checkpoint(ckpt)
        name = loaded.spec.name
        checkpoints[name] = {"sha256": file_sha256(ckpt), "masknet_params": loaded.spec.num_params(),
                             "trained_for_benchmark": args.checkpoint is None}
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            if variant == "postgresql":
                if not args.pg_url:
                    skipped[variant] = "no --pg-url / HYPEROBF_TEST_PG_URL (run scripts/ci_postgres.sh)"
                    continue
                db_url = loopback_pg(args.pg_url)
                reset_pg(db_url)
            elif variant in ("sqlite", "sqlite-unbatched"):
                db_url = f"sqlite:///{work / f'{name}-{variant}.db'}"
            else:
                raise SystemExit(f"unknown variant {variant!r}")
            max_batch = 1 if variant == "sqlite-unbatched" else args.max_batch
            config = work / f"{name}-{variant}.toml"
            write_config(config, ckpt, db_url, max_batch, args.max_wait_ms, args.device, args.accounts)
            server = Server(config, free_port(), work, args.workers)
            try:
                server.wait_ready()
                before = {"uptime": uptime(), "loadavg": loadavg()}
                result = asyncio.run(_drive(server, args))
                after = {"uptime": uptime(), "loadavg": loadavg()}
            finally:
                server.stop()
            result.update(_batches(db_url, result.pop("issued_ids")))
            runs.append({"structure": name, "variant": variant, "db": variant.split("-")[0], "workers": args.workers,
                         "max_batch": max_batch, "max_wait_ms": args.max_wait_ms, "concurrency": args.concurrency,
                         "masknet_params": loaded.spec.num_params(), "before": before, "after": after, **result})
            print(f"{name}/{variant}: {result['throughput_rps']} nets/s, p50 {result.get('p50_ms')} ms, "
                  f"p99 {result.get('p99_ms')} ms, errors {result['errors']}, server CPU "
                  f"{result['server_cpu_ms_per_issuance']} ms per issuance", file=sys.stderr)
    libs = {}
    for lib in SERVER_LIBS:
        try:
            libs[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    payload = {
        "benchmark": "psp_load", "host": HOST, "server": f"hyperobf serve (uvicorn, {args.workers} worker process(es)); "
        "client httpx.AsyncClient on the same machine", "server_device": args.device, "checkpoints": checkpoints,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "pg_url"},
        "server_libraries": libs, "runs": runs, "skipped": skipped, "start": start,
        "end": {"uptime": uptime(), "loadavg": loadavg(), "busiest_processes": busiest_processes()},
        "load_start": start["loadavg"], "load_end": loadavg(),
    }
    path = write_json(args.name, payload, args.out)
    try:
        from benchmarks.bench_psp_plot import plot_load

        print(f"plot: {plot_load(json.loads(path.read_text()), path.with_suffix('.png'))}")  # (with the machine stamp)
    except ImportError as e:  # matplotlib is optional for the numbers
        print(f"no plot ({e})")
    print_table(runs, ["structure", "variant", "workers", "issued", "errors", "throughput_rps", "p50_ms", "p99_ms",
                       "mean_batch", "server_cpu_ms_per_issuance", "client_cpu_ms_per_request"],
                title=f"PSP issuance on loopback (server device {args.device}, {os.cpu_count()} cores, "
                      f"load {start['loadavg']})")
    for k, v in skipped.items():
        print(f"skipped {k}: {v}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
