"""Check the speed targets (benchmarks/README.md) against benchmark JSON; never by timing anything itself.

    python benchmarks/check_targets.py [DIR ...]      # default: benchmarks/results and its subfolders (gpu/, ...)

Every target is a ratio to a roof measured in the same run, so it holds or fails alike on a fast or a slow machine:
  generate  HyperNet / minimal batched reference kernel <= 1.0 at N = 10^4, same device and dtype (generation.json;
            every dtype / host-copy variant; the paired ratio when the JSON has it)
  export    10^4 ONNX fp32 files: whole export / bare write of the same files <= 1.2 (export.json, median over runs)
  apply     112^2 onnx fp32: GFLOP/s (spec FLOPs) / onnxruntime sgemm GFLOP/s at the same thread count >= 0.8,
            for 1 thread and for all usable cores (apply.json)
  photo     12 MP photo end to end / Pillow decode + encode of that photo <= 1.5 (apply.json, every e2e variant)

Results: PASS, MISS; NO ROOF (an older JSON without the roof: shown with its absolute number, not judged);
SUSPECT (the result beat a roof that does strictly less work, so the roof sample was disturbed: not judged);
INFO. Exit status 0 if nothing was missed and every selected target was judged somewhere, 1 if any missed,
2 if a selected target was never judged (use --allow-missing to accept that).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, print_table, read_json  # noqa: E402

GEN_N, GEN_RATIO = 10_000, 1.0
EXPORT_N, EXPORT_RATIO = 10_000, 1.2
APPLY_SIZE, APPLY_RATIO = 112, 0.8
PHOTO_MP, PHOTO_RATIO = 12.0, 1.5


def _get(row: dict, *keys: str, default=None):
    """First present key (results of other scripts may name a field differently)."""
    for k in keys:
        if row.get(k) is not None:
            return row[k]
    return default


def _rows(payload: dict) -> list[dict]:
    rows = payload.get("rows") or payload.get("results") or []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _where(path: Path, payload: dict) -> tuple[str, str]:
    """'folder/file (machine)' and 'load start -> end': folders hold different machines' runs."""
    m = payload.get("machine", {})
    if payload.get("device") == "cuda":
        dev = m.get("gpu")
    else:
        dev = m.get("label") or f"{m.get('cpu', 'cpu')}, {m.get('cores', '?')} cores"
    start = _get(payload, "load_start", default=m.get("load_before", m.get("loadavg_1m")))
    end = _get(payload, "load_end", default=m.get("load_after"))
    def first(v):  # the 1-minute load of [1, 5, 15], rounded
        v = v[0] if isinstance(v, list) and v else v
        return round(v, 2) if isinstance(v, float) else v

    load = f"{first(start)}" + (f"->{first(end)}" if end is not None else "")
    return f"{path.parent.name}/{path.name} ({dev})", load


def _judge(ratio: float | None, limit: float, upper: bool, floor_ok: bool = True) -> str:
    if ratio is None:
        return "NO ROOF"
    if not floor_ok:
        return "SUSPECT"
    return "PASS" if (ratio <= limit if upper else ratio >= limit) else "MISS"


def check_generate(path: Path, payload: dict) -> list[dict]:
    rows, out = _rows(payload), []
    where, load = _where(path, payload)
    paired = {(q.get("dtype"), bool(q.get("host_copy"))): q for q in payload.get("ratios") or []
              if isinstance(q, dict) and q.get("n") == GEN_N and q.get("ratio") is not None}
    for a in rows:
        if a.get("impl") != "hypernet" or a.get("n") != GEN_N:
            continue
        b = next((r for r in rows if r.get("impl") == "reference" and r.get("n") == GEN_N
                  and r.get("dtype") == a.get("dtype") and r.get("host_copy") == a.get("host_copy")), None)
        label = f"generate 1e4 {a.get('dtype')}{' +host' if a.get('host_copy') else ''} / reference"
        q = paired.get((a.get("dtype"), bool(a.get("host_copy"))))
        ratio = q["ratio"] if q else (a["seconds"] / b["seconds"] if b else None)
        how = f"paired x{q['pairs']}" if q and q.get("pairs") else "of medians"
        medians = f"; row medians {a['seconds']:.3g} s / {b['seconds']:.3g} s" if b else ""
        measured = "no reference row" if ratio is None else f"{ratio:.3f}x {how}{medians}"
        out.append({"target": label, "where": where, "measured": measured, "limit": f"<= {GEN_RATIO}x",
                    "result": _judge(ratio, GEN_RATIO, True), "load": load})
    return out


def _is_onnx(row: dict) -> bool:
    return str(_get(row, "format", "fmt", default="")).lower().lstrip(".") == "onnx"


def _fp32(row: dict) -> bool:
    return str(_get(row, "precision", "dtype", default="fp32")).lower() == "fp32"


def check_export(path: Path, payload: dict) -> list[dict]:
    """fp32 ONNX at N = 10^4: the median over runs of (whole export / bare write of the same files)."""
    where, load = _where(path, payload)
    runs = [r for r in _rows(payload) if _is_onnx(r) and _fp32(r) and _get(r, "n", "files", "users") == EXPORT_N
            and _get(r, "seconds") is not None]
    if not runs:
        return []
    secs = statistics.median(r["seconds"] for r in runs)
    # older JSON: bare_write_s without the ratio (files of the same count and size, same run)
    ratios = [_get(r, "ratio_to_bare_write", default=r["seconds"] / r["bare_write_s"] if r.get("bare_write_s") else None)
              for r in runs]
    ratio = statistics.median(ratios) if all(q is not None for q in ratios) else None
    measured = f"{secs:.3g} s median of {len(runs)}"
    if ratio is not None:
        measured = f"{ratio:.2f}x ({measured}; runs {', '.join(f'{q:.2f}' for q in ratios)})"
    return [{"target": "export 1e4 ONNX fp32 / bare write", "where": where, "measured": measured,
             "limit": f"<= {EXPORT_RATIO}x", "load": load,
             "result": _judge(ratio, EXPORT_RATIO, True, floor_ok=ratio is None or ratio >= 1.0)}]


def _size(row: dict) -> int | None:
    s = _get(row, "size", "side", "input_size", "resolution")
    if isinstance(s, str):  # "112x112", "112^2"
        s = s.lower().replace("^2", "").split("x")[0]
        return int(s) if s.isdigit() else None
    return s


def check_apply(path: Path, payload: dict) -> list[dict]:
    """onnxruntime, .onnx fp32, 112², default session options (bench_apply.py's 'net' section), at 1 thread and
    at all usable cores: GFLOP/s over the sgemm roof at that thread count. The 'options' section's best variant
    is INFO: a session setting the runtime could adopt, not the configuration it ships with."""
    where, load = _where(path, payload)
    m = payload.get("machine", {})
    all_cores = _get(payload, "cpus_usable", default=m.get("cores_usable", m.get("cores")))
    base = [r for r in _rows(payload) if _size(r) == APPLY_SIZE and _is_onnx(r) and _fp32(r)
            and "torch" not in str(_get(r, "runtime", default="")).lower() and _get(r, "ms", "ms_per_image") is not None]
    has_sections = any("section" in r for r in base)
    main = [r for r in base if r.get("section") == "net"] if has_sections else base
    out = []
    for r in main:
        threads = _get(r, "threads", "intra_op_threads")
        if threads not in (1, all_cores):
            continue
        ms, ratio = _get(r, "ms", "ms_per_image"), r.get("ratio_to_sgemm")
        measured = f"{ms:.3g} ms" if ratio is None else f"{ratio:.2f} ({r['gflop_per_s']:.3g} GFLOP/s, {ms:.3g} ms)"
        out.append({"target": f"apply 112^2 onnx fp32 {threads}t / sgemm {threads}t", "where": where, "measured": measured,
                    "limit": f">= {APPLY_RATIO}", "result": _judge(ratio, APPLY_RATIO, False),
                    "load": _get(r, "load_1m", default=load)})
    options = [r for r in base if r.get("section") == "options"]
    if options:
        best = min(options, key=lambda r: r["ms"])
        ratio = f"{best['ratio_to_sgemm']:.2f}, " if best.get("ratio_to_sgemm") is not None else ""
        out.append({"target": f"  info: best session option '{best.get('variant')}'", "where": where,
                    "measured": f"{ratio}{best['ms']:.3g} ms", "limit": f">= {APPLY_RATIO}", "result": "INFO",
                    "load": _get(best, "load_1m", default=load)})
    return out


def check_photo(path: Path, payload: dict) -> list[dict]:
    """Every end-to-end variant on the 12 MP photo: total / (Pillow decode + encode of the photo, same run)."""
    where, load = _where(path, payload)
    out = []
    for r in _rows(payload):
        if r.get("section") != "e2e" or r.get("total_ms") is None:
            continue
        mp, ratio = r.get("megapixels", PHOTO_MP), r.get("ratio_to_roof")
        measured = f"{r['total_ms']:.4g} ms" if ratio is None else f"{ratio:.2f}x ({r['total_ms']:.4g} / {r['roof_ms']:.4g} ms)"
        result = _judge(ratio, PHOTO_RATIO, True, floor_ok=ratio is None or ratio >= 1.0)
        out.append({"target": f"photo {mp:g} MP {r.get('variant')} {r.get('threads')}t / decode+encode", "where": where,
                    "measured": measured, "limit": f"<= {PHOTO_RATIO}x", "load": _get(r, "load_1m", default=load),
                    "result": result if mp >= PHOTO_MP - 0.1 else "INFO"})  # only the 12 MP photo is the target
    return out


CHECKS = {"generate": ("generation.json", check_generate), "export": ("export.json", check_export),
          "apply": ("apply.json", check_apply), "photo": ("apply.json", check_photo)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check the speed targets (ratios to roofs) against benchmark JSON.")
    p.add_argument("dirs", nargs="*", type=Path, help="results folders (default benchmarks/results and its subfolders)")
    p.add_argument("--targets", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--allow-missing", action="store_true", help="exit 0 when a target was never judged (nothing missed)")
    args = p.parse_args(argv)
    dirs = args.dirs or ([RESULTS, *sorted(d for d in RESULTS.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))]
                         if RESULTS.is_dir() else [])
    selected = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in selected if t not in CHECKS]
    if bad:
        print(f"error: unknown target(s) {', '.join(bad)}; choose from {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    table, unjudged = [], []
    for target in selected:
        fname, check = CHECKS[target]
        found = []
        for d in dirs:
            payload = read_json(d / fname)
            if payload is not None:
                found += check(d / fname, payload)
        if not any(r["result"] in ("PASS", "MISS") for r in found):
            unjudged.append(target)
        if not found:
            found = [{"target": target, "where": ", ".join(f"{d.name}/{fname}" for d in dirs) or "(no folders)",
                      "measured": "-", "limit": "-", "result": "NO DATA", "load": None}]
        table += found
    print_table(table, ["target", "where", "measured", "limit", "result", "load"], title="speed targets (ratios to roofs "
                "measured in the same run)")
    if any(r["result"] == "MISS" for r in table):
        print("\nresult: a target was MISSED")
        return 1
    if unjudged:
        print(f"\nresult: no misses; never judged (no data, no roof or a suspect roof): {', '.join(unjudged)}")
        return 0 if args.allow_missing else 2
    print("\nresult: all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
