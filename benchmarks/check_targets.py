"""Check the speed targets (benchmarks/README.md) against benchmark JSON; never by timing anything itself.

    python benchmarks/check_targets.py [DIR ...]      # default: benchmarks/results and its subfolders (gpu/, ...)

Targets:
  generate  10^4 nets from the HyperNet <= 1.5x the minimal batched reference on the same device
            (generation.json; every dtype / host-copy variant measured at N = 10^4 is checked)
  export    10^4 ONNX files <= 2 s on 2 CPU cores (export.json)
  apply     one 112^2 image <= 4 ms, onnxruntime fp32, 1 thread (apply.json)

Prints a table; exit status 0 if every checked target passed, 1 if any missed, 2 if none missed but a
selected target had no data (use --allow-missing to accept that).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, print_table, read_json  # noqa: E402

GEN_RATIO = 1.5
EXPORT_N, EXPORT_S = 10_000, 2.0
APPLY_SIZE, APPLY_MS = 112, 4.0


def _get(row: dict, *keys: str, default=None):
    """First present key (results of other scripts may name a field differently)."""
    for k in keys:
        if row.get(k) is not None:
            return row[k]
    return default


def _rows(payload: dict) -> list[dict]:
    rows = payload.get("rows") or payload.get("results") or []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _where(path: Path, payload: dict) -> tuple[str, object]:
    m = payload.get("machine", {})
    # only the torch benchmarks run on a GPU (and say so); otherwise name the CPU: folders may hold other machines'
    # runs (e.g. devicehost_cpu/ = a GPU machine's host CPU), and a target holds or not per machine
    dev = m.get("gpu") if payload.get("device") == "cuda" else f"{m.get('cpu', 'cpu')}, {m.get('cores', '?')} cores"
    return f"{path.parent.name}/{path.name} ({dev})", _get(payload, "load_start", default=m.get("loadavg_1m"))


def check_generate(path: Path, payload: dict) -> list[dict]:
    rows = _rows(payload)
    where, load = _where(path, payload)
    out = []
    for a in rows:
        if a.get("impl") != "hypernet" or a.get("n") != 10_000:
            continue
        b = next((r for r in rows if r.get("impl") == "reference" and r.get("n") == 10_000
                  and r.get("dtype") == a.get("dtype") and r.get("host_copy") == a.get("host_copy")), None)
        label = f"generate 1e4 {a.get('dtype')}{' +host' if a.get('host_copy') else ''}"
        if b is None:
            out.append({"target": label, "where": where, "measured": "no reference row", "limit": f"<= {GEN_RATIO}x",
                        "result": "NO DATA", "load": load})
            continue
        ratio = a["seconds"] / b["seconds"]
        out.append({"target": label, "where": where, "measured": f"{ratio:.2f}x ({a['seconds']:.3g} s / {b['seconds']:.3g} s)",
                    "limit": f"<= {GEN_RATIO}x", "result": "PASS" if ratio <= GEN_RATIO else "MISS", "load": load})
    return out


def _is_onnx(row: dict) -> bool:
    fmt = str(_get(row, "format", "fmt", default="")).lower().lstrip(".")
    return fmt == "onnx"


def _fp32(row: dict) -> bool:
    return str(_get(row, "precision", "dtype", default="fp32")).lower() == "fp32"


def check_export(path: Path, payload: dict) -> list[dict]:
    """fp32 ONNX at N = 10^4: the median over runs (bench_export.py's summary.median_s, else the rows' median)."""
    where, load = _where(path, payload)
    runs = [r for r in _rows(payload) if _is_onnx(r) and _fp32(r) and _get(r, "n", "files", "users") == EXPORT_N
            and _get(r, "seconds") is not None]
    if not runs:
        return []
    summary = next((r for r in payload.get("summary") or [] if isinstance(r, dict) and _is_onnx(r) and _fp32(r)
                    and r.get("n") == EXPORT_N and r.get("median_s") is not None), None)
    secs = summary["median_s"] if summary else statistics.median(r["seconds"] for r in runs)
    threads = {_get(r, "threads", "cores") for r in runs}
    two_cores = threads <= {1, 2, None}
    probe = payload.get("contention") or payload.get("contention_probe_start") or {}
    load = _get(runs[0], "load_before", "load_1m", default=load)
    return [{"target": f"export 1e4 ONNX fp32 ({'/'.join(str(t) for t in sorted(threads, key=str))} threads)",
             "where": where, "measured": f"{secs:.3g} s median of {len(runs)} ({EXPORT_N / secs:.0f} files/s; "
                                         f"best {min(r['seconds'] for r in runs):.3g} s)",
             "limit": f"<= {EXPORT_S} s on 2 cores", "result": "PASS" if secs <= EXPORT_S and two_cores else "MISS",
             "load": load if not probe else f"{load} (probe {probe.get('median_us')} us)"}]


def _size(row: dict) -> int | None:
    s = _get(row, "size", "side", "input_size", "resolution")
    if isinstance(s, str):  # "112x112", "112^2"
        s = s.lower().replace("^2", "").split("x")[0]
        return int(s) if s.isdigit() else None
    return s


def check_apply(path: Path, payload: dict) -> list[dict]:
    """onnxruntime, .onnx fp32, 112^2, 1 thread, default session options (bench_apply.py's 'net' section).

    The 'options' section's best variant is shown as INFO: a session setting the runtime could adopt, not the
    configuration it ships with.
    """
    where, load = _where(path, payload)
    base = [r for r in _rows(payload) if _size(r) == APPLY_SIZE and _get(r, "threads", "intra_op_threads") == 1
            and _is_onnx(r) and _fp32(r) and "torch" not in str(_get(r, "runtime", default="")).lower()
            and _get(r, "ms", "ms_per_image", "latency_ms") is not None]
    has_sections = any("section" in r for r in base)
    main = [r for r in base if r.get("section") == "net"] if has_sections else base
    out = []
    for r in main:
        ms = _get(r, "ms", "ms_per_image", "latency_ms")
        out.append({"target": "apply 112^2 onnx fp32 1 thread", "where": where, "measured": f"{ms:.3g} ms",
                    "limit": f"<= {APPLY_MS} ms", "result": "PASS" if ms <= APPLY_MS else "MISS",
                    "load": _get(r, "load_1m", default=load)})
    options = [r for r in base if r.get("section") == "options"]
    if options:
        best = min(options, key=lambda r: r["ms"])
        out.append({"target": f"  info: best session option '{best.get('variant')}'", "where": where,
                    "measured": f"{best['ms']:.3g} ms", "limit": f"<= {APPLY_MS} ms", "result": "INFO",
                    "load": _get(best, "load_1m", default=load)})
    return out


CHECKS = {"generate": ("generation.json", check_generate), "export": ("export.json", check_export),
          "apply": ("apply.json", check_apply)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check the speed targets against benchmark JSON.")
    p.add_argument("dirs", nargs="*", type=Path, help="results folders (default benchmarks/results and its subfolders)")
    p.add_argument("--targets", default="generate,export,apply", help="comma-separated subset of generate,export,apply")
    p.add_argument("--allow-missing", action="store_true", help="exit 0 when a target has no data (nothing missed)")
    args = p.parse_args(argv)
    dirs = args.dirs or ([RESULTS, *sorted(d for d in RESULTS.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))]
                         if RESULTS.is_dir() else [])
    selected = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in selected if t not in CHECKS]
    if bad:
        print(f"error: unknown target(s) {', '.join(bad)}; choose from {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    table, missing = [], []
    for target in selected:
        fname, check = CHECKS[target]
        found = []
        for d in dirs:
            payload = read_json(d / fname)
            if payload is not None:
                found += check(d / fname, payload)
        if not found:
            missing.append(target)
            table.append({"target": target, "where": ", ".join(f"{d.name}/{fname}" for d in dirs) or "(no folders)",
                          "measured": "-", "limit": "-", "result": "NO DATA", "load": None})
        table += found
    print_table(table, ["target", "where", "measured", "limit", "result", "load"], title="speed targets")
    if any(r["result"] == "MISS" for r in table):
        print("\nresult: a target was MISSED")
        return 1
    if missing or any(r["result"] == "NO DATA" for r in table):
        print(f"\nresult: no misses; no data for: {', '.join(missing) or 'some variants'}")
        return 0 if args.allow_missing else 2
    print("\nresult: all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
