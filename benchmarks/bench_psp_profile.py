"""Where an issuance's server CPU goes: py-spy samples a running `hyperobf serve` (one worker) while
it issues nets at concurrency 32, and every sample is put in one stage of the request's way:
HTTP/JSON (uvicorn, FastAPI, pydantic, the event loop), auth (token lookup), limits pre-check,
index sync, HyperNet generation, probe fingerprint (near-duplicate check), rendering (exporter
template), sealing (sha256 + AES-GCM), the recording transaction, and the rest.

    python benchmarks/bench_psp_profile.py --checkpoint run/checkpoint.pt    # default: structure A, 1 step

py-spy attaches after start-up and warm-up, so only the load is sampled; samples of threads
waiting (on a condition, a queue, the batcher) are idle, not CPU. Writes
benchmarks/results/psp_profile.json (stage shares, top frames per stage, machine and load) and
psp_profile.txt (the same as a table). py-spy: `pip install py-spy` (needs ptrace: root or
CAP_SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, loadavg, write_json  # noqa: E402
from benchmarks.bench_psp_server import Server, free_port, make_checkpoint, write_config  # noqa: E402
from hyperobf.psp.config import PSPConfig  # noqa: E402

# (stage, marker): a sample belongs to the stage of the frame nearest its leaf that has a marker
STAGES = [
    ("hypernet", "generate_users"), ("fingerprint", "Fingerprinter"), ("fingerprint", "NearestIndex"),
    ("render", "Renderer.render"), ("seal", "Issuer._seal"), ("index_sync", "sync_index"),
    ("record_tx", "Issuer._record"), ("limits_precheck", "Issuer._precheck"), ("auth", "authenticate"),
    ("auth", "Issuer._authenticate"),
    ("download", "PSPService.file"),
]
IDLE_LEAVES = ("Condition.wait ", "Condition._acquire_restore", "Event.wait ", "Queue.get ", "_wait_for_tstate_lock",
               "Thread._bootstrap ", "WorkerThread.run ")  # (anyio's pool threads waiting for work)
ORDER = ["http_json", "auth", "limits_precheck", "index_sync", "hypernet", "fingerprint", "render", "seal",
         "record_tx", "download", "other"]


def classify(raw: Path) -> tuple[collections.Counter, dict[str, collections.Counter]]:
    """py-spy raw (collapsed) stacks -> samples per stage, and the leaf frames of each stage."""
    stages, leaves = collections.Counter(), collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        leaf = re.sub(r":\d+\)", ")", frames[-1])
        if leaf.startswith(IDLE_LEAVES):
            stages["idle"] += int(n)
            continue
        stage = next((s for f in reversed(frames) for s, m in STAGES if m in f), None)
        if stage is None:  # the web stack (event loop in C shows as Runner.run)
            web = any(k in stack for k in ("uvicorn", "starlette", "fastapi", "pydantic", "asyncio", "anyio", "h11"))
            stage = "http_json" if web else "other"
        stages[stage] += int(n)
        leaves[stage][leaf] += int(n)
    return stages, leaves


async def _drive(base: str, n: int, concurrency: int, accounts: int) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=120,
                                 limits=httpx.Limits(max_connections=concurrency + 4)) as c:
        tokens = []
        for _ in range(accounts):
            r = await c.post("/v1/accounts", json={})
            tokens.append({"Authorization": f"Bearer {r.json()['token']}"})
        codes: collections.Counter = collections.Counter()
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                r = await c.post("/v1/masknets", headers=tokens[i % accounts], json={"format": "onnx"})
                codes[r.status_code] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return dict(codes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--structure", default="A")
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not shutil.which("py-spy"):
        raise SystemExit("py-spy not found: pip install py-spy")
    work = Path(tempfile.mkdtemp(prefix="psp-prof-"))
    try:
        _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> None:
    ckpt = args.checkpoint or make_checkpoint(args.structure, work / "ckpt")
    conf = work / "psp.toml"
    write_config(conf, ckpt, f"sqlite:///{work / 'prof.db'}", 64, PSPConfig.max_wait_ms, "cpu", 64)
    server = Server(conf, free_port(), work)
    try:
        server.wait_ready()
        asyncio.run(_drive(server.base, 64, args.concurrency, 8))  # warm-up (templates, pools, index)
        raw = work / "prof.raw"
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(server.proc.pid), "--rate", str(args.rate),
                                "--format", "raw", "--output", str(raw), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # attached
        load_before, cpu0 = loadavg(), server.cpu_seconds()
        t = time.perf_counter()
        codes = asyncio.run(_drive(server.base, args.requests, args.concurrency, 32))
        wall, cpu1, load_after = time.perf_counter() - t, server.cpu_seconds(), loadavg()
        spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
        spy.wait(60)
    finally:
        server.stop()
    stages, leaves = classify(raw)
    busy = sum(v for k, v in stages.items() if k != "idle")
    cpu_ms = (cpu1 - cpu0) * 1e3 / args.requests
    rows = [{"stage": s, "share": round(stages[s] / busy, 4), "ms_per_issuance": round(cpu_ms * stages[s] / busy, 3),
             "top_frames": [f"{n} {f}" for f, n in leaves[s].most_common(6)]} for s in ORDER if stages.get(s)]
    from hyperobf.train.checkpoint import load_checkpoint

    payload = {"benchmark": "psp_profile", "structure": load_checkpoint(ckpt).spec.name, "requests": args.requests,
               "concurrency": args.concurrency, "status_codes": codes, "seconds": round(wall, 2),
               "server_cpu_ms_per_issuance_while_sampled": round(cpu_ms, 3), "samples_busy": busy,
               "samples_idle": stages.get("idle", 0), "sampler": f"py-spy {args.rate} Hz, attached after warm-up",
               "note": "ms_per_issuance = share of the busy samples x the server CPU per issuance measured in "
                       "the same run (py-spy's sampling adds some CPU of its own to the server)",
               "stages": rows, "load_start": load_before, "load_end": load_after}
    path = write_json("psp_profile", payload, args.out)
    lines = [f"PSP issuance profile, structure {payload['structure']}: {args.requests} issuances at concurrency "
             f"{args.concurrency}, server CPU {cpu_ms:.2f} ms per issuance (load {load_before} -> {load_after})", "",
             f"{'stage':16s} {'share':>6s} {'ms/issuance':>11s}  top frames"]
    for r in rows:
        lines.append(f"{r['stage']:16s} {100 * r['share']:5.1f}% {r['ms_per_issuance']:11.3f}  {r['top_frames'][0]}")
    text = "\n".join(lines) + "\n"
    (Path(args.out or RESULTS) / "psp_profile.txt").write_text(text)
    print(text + f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
