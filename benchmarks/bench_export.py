"""Exporter throughput (issue 4): files/s per format and precision at N = 100 and 10^4, plus a
study of int8 schemes judged on δ.

    python benchmarks/bench_export.py [--checkpoint H.pt] [--faces DIR] [--ns 100,10000]
                                      [--repeats 3] [--out DIR] [--quick] [--no-int8-study]

Each run is one ``hyperobf.export.issue.issue_users`` call — exactly what ``hyperobf export``
does: CSPRNG latents, HyperNet generation (structure A), template build, byte splicing, writing,
reading back and hashing every file, the full check of a 3-user sample (onnx.checker full_check,
onnxruntime vs torch on random and face inputs, the mobile usability checker; CoreML: package
read-back with coremltools), manifest and the final rename. One format and precision per run,
so files/s belongs to that format. Each run writes to a fresh folder on the local disk; all
are deleted at the end (not timed).

Before every run (and floor) ``os.sync()`` flushes what earlier runs wrote (untimed): on this
ext4 disk, creating files while the previous 0.6 GB is being written back costs several times
more kernel time, an interaction between benchmark runs, not part of one export.

Files deleted shortly before a run slow it down several times: this disk is ext4 *without a journal*,
where the inode allocator skips inodes freed in the last 1–6 minutes (``recently_deleted()``), checking
each one, so after a mass delete every new file scans past thousands of them (seen with ``perf``: 4.65 s
instead of 1.2 s, sys time 7.6 s, ``rwsem_spin_on_owner`` + ``recently_deleted``). Hence nothing is
deleted until the end, and runs right after a previous benchmark's cleanup are slower; a benchmark
should start a few minutes after any mass deletion.

Row fields: ``seconds`` = wall time of the whole call, ``files_per_s`` = n / seconds,
``cpu_seconds`` = process CPU time (both cores), the stage breakdown, and the load average
before and after. The roof (``_common.file_write_roof``), measured right after every run on the same
filesystem: a bare write of the same files — the run's output tree (folders, files of the same sizes,
manifest included) written by two threads with nothing else (no generation, hashing, read-back) —
``bare_write_s``, and ``ratio_to_bare_write`` = seconds / bare_write_s (the target judges it for 10^4
ONNX fp32). On this VM (Firecracker, free-page reporting) the kernel time to fill ~0.6 GB of fresh page
cache alone varies from ~0.5 s to several seconds, and the 2 cores are shared with other work: that is why
the roof is measured beside each run rather than once.

Default checkpoint: a freshly initialised (calibrated, untrained) structure-A HyperNet: speed
depends on shapes, not on training. Pass ``--checkpoint`` for a trained one; the δ numbers of
the int8 study are more meaningful with a trained HyperNet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    RESULTS, contention_probe, file_write_roof, loadavg, print_table, tree_of, write_json)

# N = 10^4 runs: (format, precision, repeats multiplier); N = 100: every supported combination.
LARGE = [("onnx", "fp32", 1.0), ("coreml", "fp32", 1.0), ("ort", "fp32", 0.34), ("onnx", "int8", 0.34),
         ("onnx", "fp16", 0.34), ("coreml", "fp16", 0.34), ("ort", "int8", 0.34)]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def default_checkpoint(folder: Path) -> tuple[Path, str]:
    """An untrained structure-A HyperNet checkpoint (the HyperNet calibrates itself at init)."""
    import torch

    from hyperobf.spec import builtin_spec
    from hyperobf.train.checkpoint import save_checkpoint
    from hyperobf.train.config import TrainConfig
    from hyperobf.train.sources import build_source

    torch.manual_seed(0)
    cfg = TrainConfig(structure="A")
    spec = builtin_spec("A")
    path = folder / "hypernet_A_init.pt"
    save_checkpoint(path, spec, cfg, build_source(spec, cfg), epoch=0)
    return path, "untrained (calibrated init) structure-A HyperNet, seed 0"


def one_run(loaded, n: int, fmt: str, precision: str, faces: str | None, scratch: Path, keep: list[Path]) -> dict:
    from hyperobf.export import writer
    from hyperobf.export.issue import issue_users

    out = scratch / f"run-{fmt}-{precision}-{n}-{len(keep)}"
    os.sync()  # untimed: the previous runs' dirty pages are flushed now, not during this run
    load0 = _load()
    c0, t0 = os.times(), time.perf_counter()
    report = issue_users(loaded, n, out, formats=[fmt], precisions=[precision], verify="sample", verify_faces=faces)
    wall, c1 = time.perf_counter() - t0, os.times()
    user, sys_ = c1.user - c0.user, c1.system - c0.system
    load1 = _load()
    job = report.jobs[0]
    v = report.verified[job["label"]]
    # Outputs are deleted only at the end: deleting 10^4 package folders takes minutes on this ext4
    # (mounted with discard), and on this VM freed page cache goes back to the host, so the next
    # run would pay for fresh pages — an artefact of benchmarking, not part of an export.
    keep.append(out)
    row = {
        "format": fmt, "precision": precision, "shape": "fixed", "n": n, "threads": 2,
        "seconds": round(wall, 3), "files_per_s": round(n / wall, 1), "cpu_seconds": round(user + sys_, 3),
        "user_cpu_s": round(user, 3), "sys_cpu_s": round(sys_, 3),
        "stages": {k: round(s, 3) for k, s in report.seconds.items()},
        "mb": round(job["bytes"] / 1e6, 1), "bytes_per_file": job["bytes"] // n, "read_back": writer.READ_BACK,
        "verified_users": v.get("users_checked"), "max_abs_diff_vs_torch": v.get("max_abs_diff"),
        "delta_rel_err": v.get("delta_rel_err"), "dssim_vs_fp32": v.get("dssim_vs_fp32"),
        "mobile_checker": (v.get("mobile_usability") or {}).get("verdict"),
        "coreml_prediction": v.get("prediction"), "faces": v.get("faces"),
        "load_before": load0, "load_after": load1,
    }
    # the roof: the same tree written bare, now, on the same filesystem (kept until the end, like the output)
    bare = file_write_roof(tree_of(out), scratch / f"bare-{len(keep)}")
    keep.append(scratch / f"bare-{len(keep)}")
    row.update(bare_write_s=bare["seconds"], bare_write_files=bare["files"], bare_write_files_per_s=bare["files_per_s"],
               bare_write_sys_cpu_s=bare["sys_cpu_s"], ratio_to_bare_write=round(wall / bare["seconds"], 3))
    return row


def int8_study(loaded, faces_dir: str | None, scratch: Path, users: int = 2) -> list[dict]:
    """δ error of int8 schemes vs fp32: ours (weight-only, per-channel) and onnxruntime.quantization's
    static QDQ (8-bit and 16-bit activations) and dynamic quantisation, on faces and random inputs."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    from hyperobf.train.sources import generate_users
    from hyperobf.export.onnx_graph import build_onnx
    from hyperobf.export.secrets_z import secure_normal
    from hyperobf.export.verify import delta_ratio, dssim_np, make_inputs, ort_outputs

    spec = loaded.spec
    inputs = make_inputs(spec, "fixed", faces_dir, n_faces=8)
    calib, test_faces = inputs.faces[:4], inputs.faces[4:]
    x_rand = inputs.groups["random"]
    params = generate_users(loaded, secure_normal(users, loaded.source.z_dim))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"image": f[None]} for f in calib])

        def get_next(self):
            return next(self.it, None)

    schemes = {
        "ours fp16 (weights+compute fp16, io fp32)": None,
        "ours int8 weight-only per-channel (activations fp32)": None,
        "ort static QDQ, 8-bit activations, per-channel int8 weights": dict(activation_type=QuantType.QUInt8),
        "ort static QDQ, 16-bit activations, per-channel int8 weights": dict(activation_type=QuantType.QUInt16),
        "ort dynamic int8 (ConvInteger)": "dynamic",
    }
    rows = []
    for u in range(users):
        p = {k: v[u] for k, v in params.items()}
        src = scratch / f"study{u}.onnx"
        onnx.save(build_onnx(spec, p, "fixed", {}), src)
        ref = {name: ort_outputs(src.read_bytes(), x) for name, x in (("faces", test_faces), ("random", x_rand))}
        for name, how in schemes.items():
            dst = scratch / f"study{u}-{len(rows)}.onnx"
            try:
                if name.startswith("ours"):
                    prec = "fp16" if "fp16" in name else "int8"
                    onnx.save(build_onnx(spec, p, "fixed", {}, prec), dst)
                elif how == "dynamic":
                    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
                else:
                    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8,
                                    per_channel=True, **how)
                data = dst.read_bytes()
                got = {g: ort_outputs(data, x) for g, x in (("faces", test_faces), ("random", x_rand))}
                d = dssim_np(got["faces"][0], ref["faces"][0])
                rows.append({"scheme": name, "user": u, "bytes": len(data),
                             "delta_rel_err_faces": delta_ratio(got["faces"][1], ref["faces"][1]),
                             "delta_rel_err_random": delta_ratio(got["random"][1], ref["random"][1]),
                             "dssim_vs_fp32_faces_max": float(d.max())})
            except Exception as e:  # a scheme onnxruntime cannot produce for this graph is reported, not fatal
                rows.append({"scheme": name, "user": u, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"})
    for r in rows:
        if "error" not in r:
            r["emittable_at_5pct"] = max(r["delta_rel_err_faces"], r["delta_rel_err_random"]) <= 0.05
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="trained checkpoint.pt (default: untrained structure-A HyperNet)")
    ap.add_argument("--faces", help="ImageFolder of real faces for verification (default: embedded synthetic faces)")
    ap.add_argument("--ns", default="100,10000", help="comma-separated user counts")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the N = 10^4 ONNX and CoreML fp32 runs")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="N = 100 only, one repeat, no int8 study")
    ap.add_argument("--no-int8-study", action="store_true")
    ap.add_argument("--formats", default="", help="only these format:precision pairs, e.g. onnx:fp32,coreml:fp32 "
                    "(default: every one at N < 1000, the LARGE list at N >= 1000)")
    args = ap.parse_args(argv)

    import torch

    from hyperobf.model_formats import FORMATS
    from hyperobf.train.checkpoint import load_checkpoint

    ns = [100] if args.quick else [int(s) for s in args.ns.split(",")]
    only = {tuple(f.split(":")) for f in args.formats.split(",") if f.strip()}
    load_start = loadavg()
    repeats = 1 if args.quick else args.repeats
    scratch = Path(tempfile.mkdtemp(prefix="hyperobf-bench-export-"))
    try:
        if args.checkpoint:
            ckpt, ckpt_note = args.checkpoint, f"{args.checkpoint}"
        else:
            ckpt, ckpt_note = default_checkpoint(scratch)
        loaded = load_checkpoint(ckpt)
        print(f"checkpoint: {ckpt_note}; structure {loaded.spec.name}, {loaded.spec.num_params()} params per net; "
              f"torch threads {torch.get_num_threads()}; load {_load()}", flush=True)
        rows: list[dict] = []
        keep: list[Path] = []
        one_run(loaded, 20, "onnx", "fp32", args.faces, scratch, keep)  # warm-up: imports, first sessions
        for n in ns:
            if n < 1000:
                plan = [(f, p, 1) for f, row in FORMATS.items() for p in row.precisions]
            else:
                plan = [(f, p, max(1, round(repeats * m))) for f, p, m in LARGE]
            for fmt, prec, reps in [p for p in plan if not only or p[:2] in only]:
                for rep in range(reps):
                    r = one_run(loaded, n, fmt, prec, args.faces, scratch, keep)
                    r["repeat"] = rep
                    rows.append(r)
                    bare = f"  (bare write of the same files: {r['bare_write_s']:.2f} s, ratio {r['ratio_to_bare_write']:.2f})"
                    print(f"  {fmt:<6} {prec:<4} n={n:<6} {r['seconds']:7.2f} s  {r['files_per_s']:8.0f} files/s  "
                          f"cpu user {r['user_cpu_s']:5.2f} s sys {r['sys_cpu_s']:5.2f} s  "
                          f"load {r['load_before']}->{r['load_after']}{bare}", flush=True)
        study = [] if (args.quick or args.no_int8_study) else int8_study(loaded, args.faces, scratch)
        # written before the clean-up: deleting 10^4 files can take minutes on this disk
        summary = []
        for key in sorted({(r["format"], r["precision"], r["n"]) for r in rows}, key=lambda k: (k[2], k[0], k[1])):
            rs = [r for r in rows if (r["format"], r["precision"], r["n"]) == key]
            secs = [r["seconds"] for r in rs]
            best = min(rs, key=lambda r: r["seconds"])
            bare = [r["bare_write_s"] for r in rs if "bare_write_s" in r]
            summary.append({"format": key[0], "precision": key[1], "n": key[2], "runs": len(rs),
                            "median_s": statistics.median(secs), "best_s": min(secs),
                            "files_per_s_median": round(key[2] / statistics.median(secs), 1),
                            "user_cpu_s": best["user_cpu_s"], "sys_cpu_s": best["sys_cpu_s"], "generate_s": best["stages"]["generate"],
                            "render_s": best["stages"]["render"], "write_wait_s": best["stages"]["write_wait"],
                            "verify_s": best["stages"]["verify"], "templates_s": best["stages"]["templates"],
                            "delta_err": best["delta_rel_err"], "load": f"{best['load_before']}->{best['load_after']}",
                            "bare_write_s_min": min(bare) if bare else None,
                            "ratio_to_bare_write_median": statistics.median(r["ratio_to_bare_write"] for r in rs)})
        print_table(summary, ["format", "precision", "n", "runs", "median_s", "best_s", "files_per_s_median", "user_cpu_s", "sys_cpu_s",
                              "generate_s", "render_s", "write_wait_s", "verify_s", "templates_s", "delta_err", "load",
                              "bare_write_s_min", "ratio_to_bare_write_median"],
                    title="\nexport throughput (one format/precision per run; seconds = whole issue_users call)")
        if study:
            print_table(study, ["scheme", "user", "bytes", "delta_rel_err_faces", "delta_rel_err_random",
                                "dssim_vs_fp32_faces_max", "emittable_at_5pct", "error"],
                        title="\nint8 / fp16 schemes judged on δ (max|Δδ|/max|δ| vs fp32, worst image)")
        path = write_json("export", {
            "checkpoint": ckpt_note, "structure": loaded.spec.name, "faces": args.faces or "synthetic (embedded)",
            "targets": {"onnx_1e4_ratio_to_bare_write": 1.2}, "contention": contention_probe(),
            "load_start": load_start, "load_end": loadavg(),
            "roofs": {"file_write": {"name": "bare write", "about": "the same files written bare right after each run (rows' bare_write_*)",
                                     "unit": "files/s", "best": "max", "value": max(r["bare_write_files_per_s"] for r in rows),
                                     "samples": [r["bare_write_files_per_s"] for r in rows], "workers": 2,
                                     "filesystem": str(scratch)}} if rows else {},
            "rows": rows, "summary": summary, "int8_study": study,
        }, args.out)
        print(f"\nwrote {path}")
    finally:
        print(f"deleting {scratch} (untimed; package folders take minutes on this disk)", flush=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
