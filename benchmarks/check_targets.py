"""Check the speed targets (benchmarks/README.md) against benchmark JSON; never by timing anything itself.

    python benchmarks/check_targets.py [DIR ...]      # default: benchmarks/results and benchmarks/results/gpu

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
    dev = payload.get("device") or ("cuda" if m.get("gpu") else "cpu")
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
    fmt = str(_get(row, "format", "fmt", "kind", default="")).lower().lstrip(".")
    return fmt == "onnx"


def check_export(path: Path, payload: dict) -> list[dict]:
    where, load = _where(path, payload)
    out = []
    for r in _rows(payload):
        n = _get(r, "n", "files", "users", "n_files")
        if not _is_onnx(r) or n != EXPORT_N:
            continue
        threads = _get(r, "threads", "cores", "num_threads")
        secs = _get(r, "seconds", "total_s", "seconds_total")
        if secs is None and _get(r, "files_per_s"):
            secs = n / r["files_per_s"]
        if secs is None:
            continue
        ok = secs <= EXPORT_S and (threads is None or threads <= 2)
        out.append({"target": f"export 1e4 ONNX ({threads if threads is not None else '?'} threads)", "where": where,
                    "measured": f"{secs:.3g} s ({n / secs:.0f} files/s)", "limit": f"<= {EXPORT_S} s on 2 cores",
                    "result": "PASS" if ok else "MISS", "load": load})
    return out


def _size(row: dict) -> int | None:
    s = _get(row, "size", "side", "input_size", "resolution")
    if isinstance(s, str):  # "112x112", "112^2"
        s = s.lower().replace("^2", "").split("x")[0]
        return int(s) if s.isdigit() else None
    return s


def check_apply(path: Path, payload: dict) -> list[dict]:
    where, load = _where(path, payload)
    out = []
    for r in _rows(payload):
        if _size(r) != APPLY_SIZE or _get(r, "threads", "intra_op_threads") != 1:
            continue
        variant = " ".join(str(_get(r, k, default="")) for k in ("runtime", "engine", "impl", "format", "precision", "variant", "dtype")).lower()
        if "torch" in variant or not ("fp32" in variant or "onnx" in variant) or any(v in variant for v in ("fp16", "int8", "ort_format", ".ort")):
            continue
        ms = _get(r, "ms", "ms_per_image", "latency_ms", "median_ms")
        if ms is None and _get(r, "seconds") is not None:
            ms = r["seconds"] * 1e3
        if ms is None:
            continue
        out.append({"target": f"apply 112^2 1 thread ({variant.strip()})", "where": where, "measured": f"{ms:.3g} ms",
                    "limit": f"<= {APPLY_MS} ms", "result": "PASS" if ms <= APPLY_MS else "MISS",
                    "load": _get(r, "load_1m", default=load)})
    return out


CHECKS = {"generate": ("generation.json", check_generate), "export": ("export.json", check_export),
          "apply": ("apply.json", check_apply)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check the speed targets against benchmark JSON.")
    p.add_argument("dirs", nargs="*", type=Path, help="results folders (default benchmarks/results and results/gpu)")
    p.add_argument("--targets", default="generate,export,apply", help="comma-separated subset of generate,export,apply")
    p.add_argument("--allow-missing", action="store_true", help="exit 0 when a target has no data (nothing missed)")
    args = p.parse_args(argv)
    dirs = args.dirs or [d for d in (RESULTS, RESULTS / "gpu") if d.is_dir()]
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
            table.append({"target": target, "where": ", ".join(str(d / fname) for d in dirs) or "(no folders)",
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
