"""Generation latency: N per-user MaskNets from one HyperNet call, side by side with
(a) one net per call in a Python loop, (b) training one ensemble member, and (c) a minimal
batched reference HyperNet with the same matmul sizes (thesis §5.2.6, Fig 5.4/5.5).

    python benchmarks/bench_generate.py                      # CPU, fp32 + bf16 (if native)
    python benchmarks/bench_generate.py --device cuda        # fp32 / tf32 / bf16, +- copy to host
    python benchmarks/bench_generate.py --checkpoint run/checkpoint.pt

Writes <out>/generation.json (and generation.png unless --no-plot) and prints a table.
Generation cost depends only on the HyperNet's shapes, not on its weights: without --checkpoint a
randomly initialised HyperNet of the default size is timed, which costs the same as a trained one.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable from a checkout

import torch  # noqa: E402

from benchmarks._common import (  # noqa: E402
    RESULTS, contention_probe, loadavg, paired_ratio, peak_rss_mb, pin_threads, print_table,
    read_json, reset_peak_rss, rss_mb, timing_stats, torch_info, write_json)
from benchmarks.gen_baselines import (  # noqa: E402
    ReferenceHyperNet, check_reference, cpu_bf16_native, measure_member)
from hyperobf.models.hypernet import HyperNet, HyperNetConfig  # noqa: E402
from hyperobf.spec import MaskNetSpec, builtin_spec  # noqa: E402

# The thesis's own measurements (NVIDIA A10, §5.2.6): shown beside ours in the table and plot.
THESIS = {
    "source": "thesis §5.2.6 / Fig 5.4 and 5.5",
    "device": "NVIDIA A10 (SURF HPC Cloud), Xeon Gold 6342, PyTorch 2.2.2",
    "points": [{"n": 10, "seconds": 0.08}, {"n": 100, "seconds": 0.19}, {"n": 10000, "seconds": 12.0}],
}
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}


@contextmanager
def precision(name: str, device: str) -> Iterator[None]:
    """tf32 = fp32 tensors with TF32 tensor-core matmuls (CUDA only); restored afterwards."""
    if name != "tf32" or device != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def load_hypernet(args: argparse.Namespace) -> tuple[HyperNet, str]:
    if not args.checkpoint:
        spec = builtin_spec(args.structure)
        hyper = HyperNet(spec, HyperNetConfig())
        return hyper, ("random init (no --checkpoint): generation cost depends only on the HyperNet's shapes, "
                       "so an untrained HyperNet costs the same as a trained one")
    from hyperobf.train.checkpoint import load_checkpoint

    loaded = load_checkpoint(args.checkpoint)
    hyper = getattr(loaded.source, "hyper", None)
    if not isinstance(hyper, HyperNet):
        raise SystemExit(f"error: {args.checkpoint} holds a '{loaded.config.method}' source, not a HyperNet")
    return hyper, f"trained checkpoint {Path(args.checkpoint).name} (sha256 {loaded.sha256[:12]})"


def outputs_per_net(spec: MaskNetSpec) -> int:
    return sum(math.prod(layer.weight_shape) + layer.out_ch for layer in spec.layers)


def _to_host(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.to("cpu") for t in tensors]  # pageable host memory, what a plain .cpu() gives


def make_call(gen_once: Callable[[int], list[torch.Tensor]], n: int, chunk: int | None, host: bool) -> Callable[[], None]:
    """A callable generating n nets (in chunks of ``chunk`` when set), optionally copying them to host.

    Chunked runs hand each chunk to the consumer and drop it (what a streaming exporter does); host copies
    are all kept until the call ends, so host memory really holds all n nets.
    """
    def call() -> None:
        kept = []
        step = chunk or n
        for start in range(0, n, step):
            out = gen_once(min(step, n - start))
            if host:
                kept.append(_to_host(out))
            del out

    return call


def loop_call(hyper: HyperNet, n: int, host: bool) -> Callable[[], None]:
    """(a) One HyperNet.generate(1) call per net; with host copy, each net is copied right after its call."""
    def call() -> None:
        for _ in range(n):
            out = list(hyper.generate(1).values())
            if host:
                _to_host(out)

    return call


def ours_once(hyper: HyperNet, dtype: torch.dtype) -> Callable[[int], list[torch.Tensor]]:
    if dtype == torch.float32:
        return lambda n: list(hyper.generate(n).values())  # the public API, as the exporter calls it
    return lambda n: list(hyper(hyper.sample_z(n).to(dtype)).values())


def measure(kind: str, fn_factory: Callable[[int], Callable[[], None]], n: int, *, dtype_name: str, host: bool,
            device: str, repeats: int, chunk: int | None, bytes_per_net: int) -> dict:
    """Time fn_factory(n)() (median over repeats after warm-up) and record its peak memory."""
    cuda = device == "cuda"
    gc.collect()
    # warm-up at chunk size: allocator, kernels and thread pools are hot, without a second full 10^5 run
    warm = fn_factory(min(n, chunk) if chunk else n)
    warm()
    rss0 = rss_mb()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
    load_before = loadavg()
    stats = timing_stats(fn_factory(n), repeats=repeats, warmup=0, cuda=cuda)
    row = {"impl": kind, "n": n, "dtype": dtype_name, "host_copy": host, "device": device, **stats,
           "chunk": chunk if chunk and chunk < n else None,
           "per_net_us": stats["seconds"] / n * 1e6, "nets_per_s": n / stats["seconds"],
           "out_mb": round(bytes_per_net * (min(n, chunk) if chunk else n) / 2**20, 1), "load_1m": (load_before or [None])[0]}
    if cuda:
        row["peak_mem_mb"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
        row["mem_kind"] = "cuda max_memory_allocated above baseline"
    else:
        row["peak_mem_mb"] = peak_rss_mb()
        row["rss_before_mb"] = rss0
        row["mem_kind"] = "process peak RSS (VmHWM)"
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--structure", default="A", help="MaskNet structure when no checkpoint is given (default A)")
    p.add_argument("--checkpoint", default="", help="time a trained HyperNet checkpoint instead of a fresh one")
    p.add_argument("--ns", default="10,20,50,100,1000,10000,100000",
                   help="comma-separated N (nets per call); 20 and 50 fill in the thesis's Fig 5.4 range")
    p.add_argument("--dtypes", default="", help="default: cpu fp32,bf16 (bf16 if native); cuda fp32,tf32,bf16")
    p.add_argument("--no-host-copy", action="store_true", help="cuda: skip the variants that copy nets to host")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats for N < 10^4")
    p.add_argument("--repeats-large", type=int, default=3, help="timed repeats for N >= 10^4")
    p.add_argument("--pairs", type=int, default=5, help="interleaved HyperNet/reference pairs per N for the ratio "
                   "(0: ratio of the two rows' medians)")
    p.add_argument("--loop-cap", type=int, default=1000, help="largest N for the one-net-per-call loop (not extrapolated)")
    p.add_argument("--member-steps", type=int, default=20, help="training steps of the one ensemble member (0: skip)")
    p.add_argument("--member-batch", type=int, default=16)
    p.add_argument("--chunk", type=int, default=-1,
                   help="generate N in chunks of this many nets (-1: auto = 10^4 on cpu, on cuda only if N won't fit; 0: never)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 2 on cpu, all cores on cuda)")
    p.add_argument("--out", type=Path, default=RESULTS, help="output folder (default benchmarks/results)")
    p.add_argument("--name", default="generation", help="JSON/PNG base name")
    p.add_argument("--budget-s", type=float, default=0, help="stop starting new measurements after this many seconds "
                   "(0: no limit); what was skipped is listed in the JSON")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


def pick_chunk(arg: int, device: str, n: int, bytes_per_net: int) -> int | None:
    if arg == 0:
        return None
    if arg > 0:
        return arg if arg < n else None
    if device == "cpu":
        return 10_000 if n > 10_000 else None  # keeps 10^5 nets (5.7 GB fp32) out of a shared 2-core box's RAM
    free, _ = torch.cuda.mem_get_info()
    fit = int(0.4 * free / bytes_per_net)  # outputs + the largest generator's (n, 8448) intermediate
    return fit if fit < n else None


def resolve(args: argparse.Namespace) -> tuple[str, list[int], list[str], list[bool]]:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device cuda but this torch ({torch.__version__}) sees no CUDA device")
    try:
        ns = sorted({int(float(x)) for x in args.ns.split(",") if x.strip()})
    except ValueError:
        raise SystemExit(f"error: --ns must be comma-separated numbers, got {args.ns!r}") from None
    if device == "cpu":
        dtypes = args.dtypes.split(",") if args.dtypes else (["fp32", "bf16"] if cpu_bf16_native() else ["fp32"])
        dtypes = [d for d in dtypes if d != "tf32"]  # TF32 is a CUDA tensor-core mode
    else:
        dtypes = args.dtypes.split(",") if args.dtypes else ["fp32", "tf32", "bf16"]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not ns or ns[0] < 1 or not dtypes:
        raise SystemExit(f"error: bad --dtypes {args.dtypes!r} or --ns {args.ns!r}")
    hosts = [False] if device == "cpu" or args.no_host_copy else [False, True]
    return device, ns, dtypes, hosts


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device, ns, dtypes, hosts = resolve(args)
    threads = pin_threads(args.threads or (2 if device == "cpu" else os.cpu_count() or 1))
    t_start, load_start = time.perf_counter(), loadavg()
    probe = contention_probe()
    if probe["threads"] > 1 and probe["median_us"] > 1000:
        print(f"WARNING: contended machine: a tiny {probe['threads']}-thread op takes {probe['median_us']:.0f} us "
              f"(load {load_start}); CPU timings will be inflated: rerun when idle", flush=True)

    hyper, weights_note = load_hypernet(args)
    hyper = hyper.to(device).eval()
    spec = hyper.spec
    ref = ReferenceHyperNet(hyper).to(device).eval()
    per_net = outputs_per_net(spec)
    diff = check_reference(hyper, ref)
    if diff > 1e-4:
        raise SystemExit(f"error: reference HyperNet disagrees with HyperNet (max diff {diff:.3g})")

    rows: list[dict] = []
    skipped: list[str] = []
    paired: dict[tuple, dict] = {}  # (n, dtype, host_copy) -> paired_ratio() of HyperNet vs reference
    payload = {
        "benchmark": "generation", "complete": False, "device": device, "torch": torch_info(device),
        "structure": spec.name, "spec_digest": spec.digest(), "hypernet_config": hyper.config_dict(),
        "hypernet_params": sum(p.numel() for p in hyper.parameters()), "outputs_per_net": per_net,
        "weights": weights_note, "reference_max_abs_diff": diff, "load_start": load_start,
        "contention_probe_start": probe,
        "cpu_bf16_native": cpu_bf16_native() if device == "cpu" else None,
        "notes": [
            "seconds = median over repeats after a warm-up call; cuda times are CUDA events (wall_s: host clock + sync)",
            "hypernet = HyperNet.generate(n) (fp32/tf32) or HyperNet(sample_z(n)) on a bf16 copy; z drawn on the device",
            "reference = minimal batched HyperNet, same matmuls (weights copied, outputs checked equal), z drawn on device",
            f"loop = one HyperNet.generate(1) call per net, measured up to N={args.loop_cap} only (nothing extrapolated)",
            "host_copy = every generated tensor copied to pageable host memory inside the timed call (cuda only; "
            "on cpu the nets are already in host memory)",
            "chunk = N generated in chunks, each chunk dropped after use (streaming consumer); peak memory per row; "
            "out_mb = output of one call (of one chunk when chunked)",
            "contention_probe = us per tiny elementwise op at the pinned thread count: tens of us when the cores "
            "are free, milliseconds when a neighbour holds one (then CPU timings are inflated)",
            "ensemble_member = training ONE MaskNet for a stated number of steps (see its note)",
        ],
        "roofs": {"reference": {"name": "minimal batched reference HyperNet (same matmuls, same device and dtype)",
                                "rows": "impl == 'reference', one per (n, dtype, host_copy)",
                                "ratio": "ratios[].ratio = median over --pairs interleaved pairs of HyperNet s / reference s "
                                         "(ratio_of_medians: the rows' medians, timed one after the other)"}},
        "thesis": THESIS, "rows": rows, "skipped_for_budget": skipped,
    }

    def save() -> Path:
        payload["load_end"] = loadavg()
        if device == "cpu":
            payload["contention_probe_end"] = contention_probe()
        payload["seconds_total"] = round(time.perf_counter() - t_start, 2)
        payload["ratios"] = [
            {"n": a["n"], "dtype": a["dtype"], "host_copy": a["host_copy"], "hypernet_s": a["seconds"],
             "reference_s": b["seconds"], "ratio_of_medians": a["seconds"] / b["seconds"],
             **paired.get((a["n"], a["dtype"], a["host_copy"]), {"ratio": a["seconds"] / b["seconds"]})}
            for a in rows if a["impl"] == "hypernet"
            for b in rows if b["impl"] == "reference" and (b["n"], b["dtype"], b["host_copy"]) == (a["n"], a["dtype"], a["host_copy"])]
        return write_json(args.name, payload, args.out)  # rewritten as rows come in: a cut-off run keeps its data

    def over_budget() -> bool:
        return bool(args.budget_s) and time.perf_counter() - t_start > args.budget_s

    print(f"generation benchmark: structure {spec.name}, {per_net} outputs/net, {payload['hypernet_params']} HyperNet "
          f"params, device {device}, threads {threads}, load {load_start}", flush=True)
    if args.member_steps > 0:  # first: the baseline the plot needs most, never cut by the budget
        rows.append(measure_member(spec, device, args.member_steps, args.member_batch))
        print(f"  ensemble member: {rows[-1]['seconds']:.3g} s for {args.member_steps} steps", flush=True)
        save()
    with torch.inference_mode():
        # every dtype without the host copy first: if the time budget runs out, the host-copy variants go
        for host, dname in [(host, dname) for host in hosts for dname in dtypes]:
            dt = DTYPES[dname]
            h = hyper if dt == torch.float32 else copy.deepcopy(hyper).to(dt)
            r = ref if dt == torch.float32 else copy.deepcopy(ref).to(dt)
            bpn = per_net * torch.empty((), dtype=dt).element_size()
            ours = ours_once(h, dt)
            theirs = lambda m, r=r, dt=dt: r.generate(m, dt)  # noqa: E731
            with precision(dname, device):
                for n in ns:
                    if over_budget():
                        skipped.append(f"{dname} host_copy={host} N={n}")
                        continue
                    reps = args.repeats if n < 10_000 else args.repeats_large
                    chunk = pick_chunk(args.chunk, device, n, bpn)
                    common = dict(dtype_name=dname, host=host, device=device, repeats=reps, chunk=chunk, bytes_per_net=bpn)
                    # ours and the reference back to back, so both see the same machine load
                    rows.append(measure("hypernet", lambda m: make_call(ours, m, chunk, host), n, **common))
                    rows.append(measure("reference", lambda m: make_call(theirs, m, chunk, host), n, **common))
                    a, b = rows[-2], rows[-1]
                    if args.pairs:  # the target's ratio: interleaved pairs, so load drift hits both alike
                        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
                        fa, fb = make_call(ours, n, chunk, host), make_call(theirs, n, chunk, host)
                        k = max(1, min(100, int(0.02 / max(b["seconds"], 1e-6))))  # >= ~20 ms per timed sample
                        def times(f: Callable[[], None], k: int = k) -> Callable[[], None]:
                            return lambda: ([f() for _ in range(k)], sync())

                        paired[(n, dname, host)] = {**paired_ratio(times(fa), times(fb), args.pairs), "calls_per_sample": k}
                    ratio = paired.get((n, dname, host), {}).get("ratio", a["seconds"] / b["seconds"])
                    print(f"  {dname:4} host={int(host)} N={n:>6}: hypernet {a['seconds']:.4g} s  reference "
                          f"{b['seconds']:.4g} s  ratio {ratio:.3f}  load {a['load_1m']}", flush=True)
                    if dname == "fp32" and n <= args.loop_cap:
                        rows.append(measure("loop", lambda m: loop_call(hyper, m, host), n,
                                            **{**common, "repeats": min(reps, 3), "chunk": None}))
                        print(f"  {dname:4} host={int(host)} N={n:>6}: loop     {rows[-1]['seconds']:.4g} s", flush=True)
                save()
            del h, r
    if skipped:
        print(f"  time budget ({args.budget_s} s) spent: skipped {len(skipped)} measurements", flush=True)
    payload["complete"] = not skipped
    path = save()
    cols = ["impl", "dtype", "host_copy", "n", "seconds", "per_net_us", "nets_per_s", "chunk", "peak_mem_mb", "load_1m"]
    print_table(rows, cols, title=f"\ngeneration ({device}, structure {spec.name}, {threads} threads)")
    print_table(payload["ratios"], ["dtype", "host_copy", "n", "hypernet_s", "reference_s", "ratio", "ratio_of_medians"],
                title="\nhypernet / reference (ratio: median of interleaved pairs)")
    print_table(THESIS["points"], ["n", "seconds"], title=f"\nthesis ({THESIS['device']})")
    print(f"\nwrote {path}")
    if not args.no_plot:
        from benchmarks.plots import plot_generation

        print(f"wrote {plot_generation(read_json(path), Path(args.out) / (args.name + '.png'))}")
    return payload


if __name__ == "__main__":
    main()
