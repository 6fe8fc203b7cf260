"""Server-side throughput of applying K *different* users' MaskNets in one batched grouped-conv call
(models.masknet.apply_batched), against K separate calls; plus onnxruntime's CUDA execution provider
when onnxruntime-gpu is installed (it is skipped, and the JSON says so, otherwise).

    python benchmarks/bench_batched_apply.py --device cuda      # K = 1, 16, 256, 1024
    python benchmarks/bench_batched_apply.py                    # CPU, K = 1, 16, 64

Writes <out>/batched_apply.json (and batched_apply.png unless --no-plot). On CPU each torch row also carries
``gflop_per_s`` (images/s x ``spec.flops``) and ``ratio_to_sgemm``: its rate over torch's own sgemm at the same
thread count (``roofs.torch_sgemm_<T>t``, sampled at the start and the end, best sample). On CUDA no roof is
measured yet (``roofs`` says so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks._common import (  # noqa: E402
    RESULTS, contention_probe, loadavg, peak_rss_mb, pin_threads, print_table,
    read_json, reset_peak_rss, sgemm_roof, timing_stats, torch_info, write_json)
from hyperobf.models.hypernet import HyperNet  # noqa: E402
from hyperobf.models.masknet import apply_batched  # noqa: E402
from hyperobf.spec import MaskNetSpec, builtin_spec, flops  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def activation_bytes(spec: MaskNetSpec, k: int, b: int, size: int, elem: int) -> int:
    """Rough peak: the two widest consecutive feature maps of k*b images (conv output + its ReLU),
    plus the skip sources' maps a U-Net-like structure keeps alive until their concat."""
    chans, hw = [], size * size
    for layer in spec.layers:
        hw = hw * layer.upsample ** 2 // layer.stride ** 2
        chans.append(layer.out_ch * hw)
    kept = sum(c for layer, c in zip(spec.layers, chans) if layer.name in spec.skip_sources)
    return k * b * elem * (2 * max(chans) + kept + 3 * size * size * 3)


def bench_torch(spec: MaskNetSpec, hyper: HyperNet, args: argparse.Namespace, device: str, rows: list[dict],
                save: Callable[[], object]) -> None:
    """Appends one row per (dtype, K, impl) to ``rows``; ``save()`` after each K (a cut-off run keeps its data)."""
    cuda = device == "cuda"
    t0 = time.perf_counter()
    free = torch.cuda.mem_get_info()[0] if cuda else args.max_mem_gb * 2**30
    for dname in args.dtypes.split(","):
        dt = DTYPES[dname]
        for k in args.k:
            need = activation_bytes(spec, k, args.images_per_net, args.size, torch.empty((), dtype=dt).element_size())
            base = {"k": k, "b": args.images_per_net, "size": args.size, "dtype": dname, "device": device,
                    "est_mem_mb": round(need / 2**20)}
            if args.budget_s and time.perf_counter() - t0 > args.budget_s:
                rows.append({**base, "impl": "batched", "skipped": f"time budget of {args.budget_s} s spent"})
                continue
            if need > 0.8 * free:
                rows.append({**base, "impl": "batched", "skipped": f"needs ~{need / 2**30:.1f} GiB, limit {free / 2**30:.1f} GiB"})
                print(f"  {dname} K={k}: skipped ({rows[-1]['skipped']})", flush=True)
                continue
            with torch.inference_mode():
                params = {n: v.to(dt).contiguous() for n, v in hyper.generate(k).items()}  # (K, *shape) each
                x = torch.rand(k, args.images_per_net, 3, args.size, args.size, device=device).to(dt)
                calls = {"batched": lambda p=params, xs=x: apply_batched(spec, p, xs)}  # bound now: deleted below
                if k <= args.loop_max:  # K separate one-net calls, for contrast
                    one = [{n: v[i:i + 1] for n, v in params.items()} for i in range(k)]
                    calls["loop"] = lambda xs=x: [apply_batched(spec, one[i], xs[i:i + 1]) for i in range(k)]
                for impl, fn in calls.items():
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    else:
                        reset_peak_rss()
                    load = (loadavg() or [None])[0]
                    try:
                        st = timing_stats(fn, repeats=args.repeats, warmup=2, cuda=cuda)
                    except torch.cuda.OutOfMemoryError as e:
                        rows.append({**base, "impl": impl, "skipped": f"CUDA out of memory: {str(e).splitlines()[0][:120]}"})
                        torch.cuda.empty_cache()
                        continue
                    imgs = k * args.images_per_net
                    rows.append({**base, "impl": impl, **st, "images_per_s": imgs / st["seconds"],
                                 "ms_per_image": st["seconds"] / imgs * 1e3, "load_1m": load,
                                 "peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else peak_rss_mb()})
                    print(f"  {dname} K={k} {impl}: {st['seconds']:.4g} s, {rows[-1]['images_per_s']:.4g} images/s", flush=True)
                del params, x, calls
                if cuda:
                    torch.cuda.empty_cache()
            save()


def bench_ort_cuda(spec: MaskNetSpec, hyper: HyperNet, repeats: int) -> list[dict]:
    """onnxruntime CUDA EP latency per image (batch 1, fixed 112^2 graph), or a row saying why it was skipped."""
    try:
        import onnxruntime as ort
    except ImportError:
        return [{"impl": "onnxruntime_cuda", "skipped": "onnxruntime is not installed"}]
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return [{"impl": "onnxruntime_cuda", "skipped": f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                 f"(install onnxruntime-gpu for it); available: {providers}"}]
    import numpy as np

    from hyperobf.export.onnx_graph import build_onnx
    from hyperobf.model_meta import INPUT_NAME

    with torch.inference_mode():
        params = {n: v[0].cpu().numpy() for n, v in hyper.generate(1).items()}
    data = build_onnx(spec, params, "fixed").SerializeToString()
    try:
        sess = ort.InferenceSession(data, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except Exception as e:  # a broken CUDA EP install: report it, don't crash the GPU script
        return [{"impl": "onnxruntime_cuda", "skipped": f"session failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"}]
    used = sess.get_providers()
    x = np.random.default_rng(0).random((1, 3, spec.input_size, spec.input_size), dtype=np.float32)
    st = timing_stats(lambda: sess.run(None, {INPUT_NAME: x}), repeats=max(repeats, 20), warmup=5)
    return [{"impl": "onnxruntime_cuda", "k": 1, "b": 1, "size": spec.input_size, "dtype": "fp32", **st,
             "ms_per_image": st["seconds"] * 1e3, "images_per_s": 1 / st["seconds"], "providers_used": used,
             "note": "includes host->device copy of the input and device->host of both outputs per call"}]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--structure", default="A")
    p.add_argument("--k", default="", help="comma-separated K (default: cuda 1,16,256,1024; cpu 1,16,64)")
    p.add_argument("--size", type=int, default=112, help="image side")
    p.add_argument("--images-per-net", type=int, default=1)
    p.add_argument("--dtypes", default="", help="default: cuda fp32,bf16; cpu fp32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loop-max", type=int, default=256, help="largest K also run as K separate calls")
    p.add_argument("--max-mem-gb", type=float, default=4.0, help="cpu: skip K whose activations exceed this")
    p.add_argument("--budget-s", type=float, default=0, help="skip the remaining K after this many seconds (0: no limit)")
    p.add_argument("--no-ort", action="store_true", help="skip the onnxruntime CUDA EP check")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="batched_apply")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device cuda but this torch ({torch.__version__}) sees no CUDA device")
    threads = pin_threads(args.threads or (2 if device == "cpu" else os.cpu_count() or 1))
    args.k = [int(v) for v in (args.k or ("1,16,256,1024" if device == "cuda" else "1,16,64")).split(",")]
    args.dtypes = args.dtypes or ("fp32,bf16" if device == "cuda" else "fp32")
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # grouped convs: let cuDNN pick per shape (inside the warm-up)
    spec = builtin_spec(args.structure)
    torch.manual_seed(0)
    hyper = HyperNet(spec).to(device).eval()
    load_start = loadavg()
    print(f"batched apply: structure {spec.name}, {args.size}^2, {args.images_per_net} image(s) per net, device {device}, "
          f"threads {threads}, load {load_start}", flush=True)
    t0 = time.perf_counter()
    rows: list[dict] = []
    payload = {"benchmark": "batched_apply", "device": device, "torch": torch_info(device), "structure": spec.name,
               "cudnn_benchmark": device == "cuda", "load_start": load_start, "complete": False,
               "contention_probe_start": contention_probe(),
               "notes": ["batched = one apply_batched call: K nets as K conv groups, each on its own images",
                         "loop = K separate apply_batched calls of one net each (run for K <= --loop-max)",
                         "images_per_s = K * images_per_net / median seconds; weights are random HyperNet outputs "
                         "(cost does not depend on them)"],
               "rows": rows}

    roof = sgemm_roof(threads, "torch") if device == "cpu" else None
    if roof is not None:
        roof.sample()
    gflop = flops(spec, args.size, args.size) / 1e9

    def save() -> Path:
        payload.update(load_end=loadavg(), seconds_total=round(time.perf_counter() - t0, 2))
        payload["roofs"] = {f"torch_sgemm_{threads}t": roof.as_dict()} if roof else {
            "note": "no roof on CUDA yet: a GPU sgemm roof was not written without a GPU to test it on"}
        for r in rows:
            if r.get("images_per_s") and r.get("size") == args.size:
                r["gflop_per_s"] = round(r["images_per_s"] * gflop, 4)
                r["ratio_to_sgemm"] = round(r["gflop_per_s"] / roof.value, 4) if roof else None
        return write_json(args.name, payload, args.out)

    bench_torch(spec, hyper, args, device, rows, save)
    if device == "cuda" and not args.no_ort:
        rows += bench_ort_cuda(spec, hyper, args.repeats)
    if roof is not None:
        roof.sample()
    payload["complete"] = True
    path = save()
    print_table(rows, ["impl", "dtype", "k", "b", "size", "seconds", "images_per_s", "ms_per_image", "gflop_per_s",
                       "ratio_to_sgemm", "peak_mem_mb", "skipped"],
                title=f"\nbatched apply ({device})")
    print(f"\nwrote {path}")
    if not args.no_plot:
        from benchmarks.plots import plot_batched_apply

        print(f"wrote {plot_batched_apply(read_json(path), Path(args.out) / (args.name + '.png'))}")
    return payload


if __name__ == "__main__":
    main()
