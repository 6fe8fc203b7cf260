"""Training-side speed of the frozen face embedder Φ: hyperobf's ONNX interpreter vs onnx2torch.

    python benchmarks/bench_embedder.py [--embedder ../shared/models/mobilefacenet.onnx] [--steps 20] [--batch 64]
                                        [--threads 1] [--rounds 3] [--stub-torchvision]

Each converter's module is wrapped in the training objective's ``Embedder`` (resize, normalise,
channels-last) and timed on what a training step asks of it: a forward and a backward pass of a
batch of faces with the gradient flowing to the input only (Φ frozen). Reported: steps/s (median
of ``--rounds`` interleaved rounds of ``--steps`` steps each, so both converters see the same
machine load), and each converter's max |Φ − onnxruntime| on a batch of 2.

onnx2torch imports torchvision (for its NMS / RoIAlign converters) when it is imported. The
torchvision 0.28.0 wheel on PyPI is linked against CUDA torch (libtorch_cuda.so, libc10_cuda.so)
and does not load beside torch 2.13.0+cpu, so ``import onnx2torch`` fails there; the row then
says why. ``--stub-torchvision`` puts an empty ``torchvision`` module in place for this
measurement only (MobileFaceNet has no NMS / RoIAlign), to time onnx2torch's conversion anyway.
onnx2torch keeps the graph's constant batch-1 Reshape, so the graph's batch dimension of that
Reshape is rewritten to 0 (= keep the input's) before conversion (as hyperobf's converter does at run time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, contention_probe, loadavg, pin_threads, print_table, write_json  # noqa: E402


def stub_torchvision() -> None:
    tv = types.ModuleType("torchvision")
    tv.ops = types.ModuleType("torchvision.ops")
    tv.ops.roi_align = None  # imported by name at onnx2torch import; never called for an embedder
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = tv, tv.ops


def onnx2torch_module(path: Path):
    """onnx2torch's GraphModule of the embedder, batch-1 Reshape targets rewritten to 0 (keep the batch)."""
    import onnx
    from onnx import numpy_helper
    from onnx2torch import convert

    model = onnx.load(str(path))
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in consts:
            attr = consts[node.input[1]].attribute[0]
            shape = numpy_helper.to_array(attr.t).copy()
            if shape[0] == 1:
                shape[0] = 0  # ONNX Reshape: 0 copies the input's dimension (the batch)
                attr.t.CopyFrom(numpy_helper.from_array(shape, attr.t.name))
    net = convert(model)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def ort_reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def time_steps(embedder, x, steps: int) -> float:
    """Seconds for ``steps`` forward + backward passes (gradient to the input only)."""
    import torch

    t = time.perf_counter()
    for _ in range(steps):
        xi = x.detach().requires_grad_(True)
        e = embedder(xi)
        (e * torch.roll(e.detach(), 1, 0)).sum().backward()
        assert xi.grad is not None
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embedder", type=Path, default=REPO.parent / "shared" / "models" / "mobilefacenet.onnx")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stub-torchvision", action="store_true", help="See the module docstring.")
    ap.add_argument("--out", type=Path, default=None, help="Results folder (default benchmarks/results).")
    args = ap.parse_args()
    load_start = loadavg()
    if not args.embedder.is_file():
        raise SystemExit(f"error: embedder not found: {args.embedder}")

    import torch

    from hyperobf.models.onnx_torch import load_onnx_module
    from hyperobf.train.feature import Embedder

    threads = pin_threads(args.threads)
    x_ref = np.random.default_rng(0).random((2, 3, 112, 112), dtype=np.float32)
    ref = ort_reference(args.embedder, (x_ref * 255.0 - 127.5) / 128.0)
    builders = {"hyperobf.models.onnx_torch": lambda: load_onnx_module(args.embedder)}
    notes: dict[str, str] = {}
    if args.stub_torchvision:
        stub_torchvision()
    try:
        import onnx2torch  # noqa: F401

        builders["onnx2torch"] = lambda: onnx2torch_module(args.embedder)
    except Exception as e:  # noqa: BLE001  (any import failure is the finding)
        notes["onnx2torch"] = f"import onnx2torch failed: {type(e).__name__}: {str(e).splitlines()[0]}"

    embedders, rows = {}, []
    for name, build in builders.items():
        t = time.perf_counter()
        net = build()
        convert_s = time.perf_counter() - t
        emb = Embedder(net.to(memory_format=torch.channels_last))
        with torch.no_grad():
            out = emb.net(((torch.from_numpy(x_ref) * 255.0 - 127.5) / 128.0)).flatten(1).numpy()
        embedders[name] = emb
        rows.append({"converter": name, "convert_s": round(convert_s, 3),
                     "max_abs_diff_vs_ort": float(np.abs(out - ref).max()),
                     "state_dict_keys": len(net.state_dict()),
                     "trainable_params": sum(p.numel() for p in net.parameters() if p.requires_grad)})

    x = torch.rand(args.batch, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    for emb in embedders.values():
        time_steps(emb, x, 1)  # warm-up
    times: dict[str, list[float]] = {n: [] for n in embedders}
    for _ in range(args.rounds):  # interleaved: both converters see the same load
        for name, emb in embedders.items():
            times[name].append(time_steps(emb, x, args.steps))
    for row in rows:
        sec = statistics.median(times[row["converter"]])
        row.update(steps_per_s=round(args.steps / sec, 3), ms_per_step=round(1000 * sec / args.steps, 1),
                   round_seconds=[round(s, 2) for s in times[row["converter"]]])
    for name, why in notes.items():
        rows.append({"converter": name, "note": why})

    print_table(rows, ["converter", "steps_per_s", "ms_per_step", "max_abs_diff_vs_ort", "state_dict_keys",
                       "trainable_params", "convert_s", "note"],
                f"embedder {args.embedder.name}: {args.steps} forward+backward steps of batch {args.batch}, "
                f"{threads} thread(s), median of {args.rounds} rounds; load {loadavg()}")
    path = write_json("embedder", {"rows": rows, "steps": args.steps, "batch": args.batch, "threads": threads,
                                   "rounds": args.rounds, "stub_torchvision": args.stub_torchvision,
                                   "torch": torch.__version__, "contention": contention_probe(),
                                   "load_start": load_start, "load_end": loadavg()}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
