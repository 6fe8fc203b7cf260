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


def machine() -> dict:
    """CPU model, cores, load, GPU name/driver (if any) and library versions."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "loadavg_1m": os.getloadavg()[0], "platform": platform.platform(),
            "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
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
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


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
    """Write ``<out_dir>/<name>.json`` with the machine stamp added; returns the path."""
    out_dir = Path(out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, sort_keys=True))
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
