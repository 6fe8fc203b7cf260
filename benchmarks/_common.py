"""Shared benchmark plumbing: machine stamp, timing helpers, memory/load probes, table printing, JSON output."""

from __future__ import annotations

import json
import os
import sys
import platform
import statistics
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


# /proc/cpuinfo flag -> the name a reader knows; which of them a CPU has decides its sgemm roof
VECTOR_FLAGS = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI",
                "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX-512 BF16", "amx_tile": "AMX", "amx_bf16": "AMX BF16",
                "amx_int8": "AMX INT8"}


def cpu_info(cpuinfo: str | None = None) -> dict:
    """CPU model, clock, vector extensions and core counts (from /proc/cpuinfo, or the text given)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, mhz, flags, physical = platform.processor() or "unknown", [], set(), None
    for line in cpuinfo.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "model name" and not mhz:
            model = value
        elif key == "cpu MHz":
            try:
                mhz.append(float(value))
            except ValueError:
                pass
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key == "cpu cores" and physical is None and value.isdigit():
            physical = int(value)
    max_mhz = None
    try:  # absent on VMs without cpufreq: then only the kernel's current/nominal "cpu MHz" is known
        max_mhz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
    except (OSError, ValueError):
        pass
    vec = {name: flag in flags for flag, name in VECTOR_FLAGS.items()}
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "clock_mhz": round(statistics.mean(mhz), 1) if mhz else None, "clock_mhz_max": max_mhz,
            "clock_source": "/proc/cpuinfo 'cpu MHz' (mean over cores at stamp time; a VM reports what its host "
                            "exposes)", "vector_extensions": vec,
            "vector_summary": ", ".join(n for n, has in vec.items() if has) or "none of " + "/".join(VECTOR_FLAGS.values()),
            "cores": os.cpu_count(), "cores_usable": usable, "physical_cores_per_socket": physical}


def machine_label(m: dict) -> str:
    """One line naming the machine a result came from, e.g. 'AMD EPYC, 2445 MHz, 2 cores, AVX2, FMA'."""
    clock = f"{m['clock_mhz']:.0f} MHz, " if m.get("clock_mhz") else ""
    return f"{m.get('cpu', '?')}, {clock}{m.get('cores', '?')} cores, {m.get('vector_summary', '?')}"


def machine() -> dict:
    """CPU model, clock, vector extensions, cores, load, GPU name/driver (if any) and library versions."""
    info = {**cpu_info(), "loadavg_1m": os.getloadavg()[0], "loadavg": loadavg(), "platform": platform.platform(),
            "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    info["label"] = machine_label(info)
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            info["gpu"], info["gpu_driver"] = [s.strip() for s in out.stdout.splitlines()[0].split(",")]
    except (OSError, subprocess.SubprocessError):
        pass
    libs = {}
    for lib in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "coremltools", "numpy", "pillow", "hyperobf"):
        try:
            libs[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    info["libraries"] = libs
    return info


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time (s) of fn() after warm-up calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(_timed(fn) for _ in range(repeats))


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def print_table(rows: list[dict], cols: list[str], title: str = "") -> None:
    if title:
        print(title)
    if not rows:
        print("(no rows)")
        return
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.rjust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in cols))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_json(name: str, payload: dict, out_dir: Path | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` with the machine stamp (and load before/after) added; returns the path."""
    out_dir = Path(out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    m = machine()
    # load before and after the run, in every JSON (the scripts record the start; the end is now)
    m["load_before"] = payload.get("load_start", payload.get("load_before"))
    m["load_after"] = payload.get("load_end", m["loadavg"])
    path.write_text(json.dumps({"machine": m, **payload}, indent=2, sort_keys=True))
    return path


def timing_stats(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
                 cuda: bool = False) -> dict:
    """Median/min/max seconds of fn() over ``repeats`` calls after ``warmup`` calls.

    cuda=True times each call with CUDA events on the current stream (plus a synchronize), and also
    reports the host wall time around call + synchronize ("wall_s"): events see GPU time between the two
    records, which includes the gaps while the GPU waits for Python to launch the next kernel.
    """
    import torch  # only benchmarks that time torch code use this helper

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times, walls = [], []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t = time.perf_counter()
            start.record()
            fn()
            end.record()
            end.synchronize()
            walls.append(time.perf_counter() - t)
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    out = {"seconds": statistics.median(times), "min_s": min(times), "max_s": max(times),
           "repeats": repeats, "warmup": warmup, "timer": "cuda_events" if cuda else "perf_counter"}
    if cuda:
        out["wall_s"] = statistics.median(walls)
    return out


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages (others share this machine's cores: record them)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: write 5 to /proc/self/clear_refs); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb() -> float | None:
    kb = _proc_status_kb("VmRSS")
    return None if kb is None else round(kb / 1024, 1)


def peak_rss_mb() -> float | None:
    """Peak resident memory since the last reset_peak_rss() (or process start), MiB."""
    kb = _proc_status_kb("VmHWM")
    if kb is None:
        try:
            import resource  # ru_maxrss is KiB on Linux; never reset

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        except (ImportError, OSError):
            return None
    return round(kb / 1024, 1)


def torch_info(device: str = "cpu") -> dict:
    """torch build, thread count and (on CUDA) the device as torch sees it."""
    import torch

    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "device": device, "python_exe": sys.executable}
    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(cuda_device=p.name, cuda_capability=f"{p.major}.{p.minor}", cuda_memory_gb=round(p.total_memory / 2**30, 1),
                    cuda_sms=p.multi_processor_count, torch_cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def pin_threads(n: int) -> int:
    """Pin torch's intra-op threads (and inter-op to 1 where still possible); returns the count in effect."""
    import torch

    torch.set_num_threads(max(1, n))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel work
        pass
    return torch.get_num_threads()


def read_json(path: Path) -> dict | None:
    """A results JSON, or None when absent/unreadable (other benchmarks may not have run yet)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def contention_probe(samples: int = 40) -> dict:
    """Median/max microseconds of a tiny elementwise op at torch's current thread count.

    On an idle machine this is tens of microseconds; when a neighbour process holds one of the cores, every
    parallel region waits for the descheduled worker thread and it jumps to milliseconds. The load average
    only hints at that; this shows it directly (stored with the results).
    """
    import torch

    x = torch.rand(1 << 16)
    torch.add(x, 1.0)
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        torch.add(x, 1.0)
        times.append((time.perf_counter() - t) * 1e6)
    return {"threads": torch.get_num_threads(), "median_us": round(statistics.median(times), 1),
            "max_us": round(max(times), 1), "loadavg": loadavg()}


# --- roofs: what this machine can do at best, measured in the same run as the result they judge -------------
# Which roof feeds which ratio (README "Targets"): generation -> its reference kernel (bench_generate.py);
# export -> bare write of the same files (file_write_roof); apply -> sgemm at the same thread count (sgemm_roof);
# the 12 MP photo -> Pillow decode + encode of that photo (pillow_roundtrip_s). A memory-bandwidth roof is not
# measured: no result is judged against it.

class Roof:
    """A ceiling sampled more than once in a run (start, between sections, end). Its value is the best sample:
    the moment the shared machine gave the most, so a ratio to it is never flattered by a loaded roof sample."""

    def __init__(self, name: str, unit: str, measure: Callable[[], float], higher_is_better: bool = True, **about):
        self.name, self.unit, self._measure, self.higher = name, unit, measure, higher_is_better
        self.about, self.samples, self.loads = about, [], []

    def sample(self) -> float:
        self.samples.append(round(self._measure(), 4))
        self.loads.append((loadavg() or [None])[0])
        return self.samples[-1]

    @property
    def value(self) -> float:
        if not self.samples:
            self.sample()
        return max(self.samples) if self.higher else min(self.samples)

    def as_dict(self) -> dict:
        return {"name": self.name, "unit": self.unit, "value": self.value, "samples": self.samples,
                "sample_load_1m": self.loads, "best": "max" if self.higher else "min", **self.about}


def _ort_matmul(n: int, threads: int):
    """onnxruntime session of one n x n x n float32 MatMul (MLAS sgemm: the kernels its convs run on)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level = threads, 1, 3
    return ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"])


def sgemm_roof(threads: int, engine: str = "onnxruntime", n: int = 1024, calls: int = 3) -> Roof:
    """GFLOP/s of one n³ float32 matrix product (2n³ FLOP; median of ``calls`` after a warm-up) at ``threads``.

    engine "onnxruntime": a one-node MatMul graph (MLAS, what the device runtime's convs use); "torch": torch.mm
    (oneDNN/MKL, what the torch benchmarks use), its thread count restored afterwards.
    """
    import numpy as np

    a, b = (np.random.default_rng(i).random((n, n), dtype=np.float32) for i in (1, 2))
    if engine == "onnxruntime":
        sess = _ort_matmul(n, threads)
        fn = lambda: sess.run(None, {"a": a, "b": b})  # noqa: E731
    elif engine == "torch":
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)

        def fn() -> None:
            old = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                torch.mm(ta, tb)
            finally:
                torch.set_num_threads(old)
    else:
        raise ValueError(f"unknown sgemm engine {engine!r}")
    measure = lambda: 2 * n**3 / 1e9 / median_time(fn, repeats=calls)  # noqa: E731
    name = f"{'torch ' if engine == 'torch' else ''}sgemm {threads}t"
    return Roof(name, "GFLOP/s", measure, engine=engine, threads=threads, n=n, calls=calls)


def tree_of(folder: Path) -> list[tuple[str, int | None]]:
    """(relative path, size) of every file under ``folder``, (relative path, None) of every sub-folder."""
    folder = Path(folder)
    return sorted((str(p.relative_to(folder)), None if p.is_dir() else p.stat().st_size) for p in folder.rglob("*"))


def file_write_roof(tree: list[tuple[str, int | None]], dest: Path, workers: int = 2) -> dict:
    """Bare write of the same tree into ``dest`` (created here): its folders, then its files (random bytes of the
    same sizes; exclusive create, write, close) on ``workers`` threads like the exporter's writer. Nothing else:
    no generation, hashing or read-back. Previous writes are flushed first (untimed)."""
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    files = [(rel, size) for rel, size in tree if size is not None]
    blob = np.random.default_rng(0).integers(0, 256, max((s for _, s in files), default=0), dtype=np.uint8).tobytes()
    os.sync()

    def part(chunk: list[tuple[str, int]]) -> None:
        for rel, size in chunk:
            fd = os.open(dest / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, memoryview(blob)[:size])
            finally:
                os.close(fd)

    t, c0 = time.perf_counter(), os.times()
    dest.mkdir()
    for rel in (rel for rel, size in tree if size is None):
        (dest / rel).mkdir()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(part, [files[i::workers] for i in range(workers)]))
    secs, c1 = time.perf_counter() - t, os.times()
    return {"seconds": round(secs, 4), "files": len(files), "folders": len(tree) - len(files),
            "bytes": sum(s for _, s in files), "files_per_s": round(len(files) / secs, 1) if secs else None,
            "sys_cpu_s": round(c1.system - c0.system, 3), "workers": workers}


def pillow_roundtrip_s(src: Path, dst: Path, quality: int = 95) -> float:
    """Seconds for Pillow to decode ``src`` fully and encode it as JPEG to ``dst``: the floor of protecting it."""
    from PIL import Image

    t = time.perf_counter()
    with Image.open(src) as im:
        im.load()
        im.save(dst, "JPEG", quality=quality)
    return time.perf_counter() - t


def paired_ratio(fa: Callable[[], object], fb: Callable[[], object], pairs: int) -> dict:
    """Median of time(fa)/time(fb) over ``pairs`` back-to-back pairs, alternating which goes first, so load that
    comes and goes hits both alike (a ratio of two separately timed medians drifts with the load between them)."""
    ratios = []
    for i in range(pairs):
        order = (fa, fb) if i % 2 == 0 else (fb, fa)
        secs = [_timed(fn) for fn in order]
        ratios.append(secs[0] / secs[1] if i % 2 == 0 else secs[1] / secs[0])
    return {"ratio": statistics.median(ratios), "pair_ratios": [round(r, 4) for r in ratios], "pairs": pairs}
