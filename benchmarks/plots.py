"""PNG plots of benchmark JSON (matplotlib, Agg backend): one figure per results file.

    python benchmarks/plots.py [DIR]        # every known *.json in DIR (default benchmarks/results)

generation.json -> generation.png: left panel in the shape of the thesis's Fig 5.4 (10..100 nets, HyperNet vs
one-net loop vs ensemble), right panel Fig 5.5 (10..10^5 nets, log-log); the thesis's A10 numbers are drawn beside
ours. export.json, apply.json and batched_apply.json get simple bar/line plots when present; a file whose layout
is not recognised is reported and skipped, never guessed at.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks._common import RESULTS, read_json  # noqa: E402


def _stamp(payload: dict) -> str:
    """Machine (model, clock, cores, vector extensions), torch build and threads, load before -> after, roofs."""
    m = payload.get("machine", {})
    dev = m.get("gpu") if payload.get("device") == "cuda" else (m.get("label") or f"{m.get('cpu', '?')} ({m.get('cores', '?')} cores)")
    libs = m.get("libraries", {})
    threads = (payload.get("torch") or {}).get("threads")

    def one(v):
        return v[0] if isinstance(v, list) and v else (round(v, 2) if isinstance(v, float) else v)

    load = f"{one(payload.get('load_start', m.get('loadavg_1m', '?')))}"
    if payload.get("load_end", m.get("load_after")) is not None:
        load += f"->{one(payload.get('load_end', m.get('load_after')))}"
    roofs = [f"{r['name']} {r['value']:.4g} {r['unit']}" for r in (payload.get("roofs") or {}).values()
             if isinstance(r, dict) and isinstance(r.get("value"), (int, float))]
    return (f"{dev}; torch {libs.get('torch', '?')}{f', {threads} thread(s)' if threads else ''}; load {load}; "
            f"{m.get('time', '')}" + (f"\nroofs (same run, best sample): {'; '.join(roofs)}" if roofs else ""))


def _series(rows: list[dict], impl: str, dtype: str, host: bool, nmax: float = float("inf")) -> tuple[list, list]:
    pts = sorted((r["n"], r["seconds"]) for r in rows
                 if r.get("impl") == impl and r.get("dtype") == dtype and bool(r.get("host_copy")) == host and r["n"] <= nmax)
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_generation(payload: dict, out: Path) -> Path:
    rows = payload["rows"]
    thesis = payload.get("thesis", {}).get("points", [])
    member = next((r for r in rows if r.get("impl") == "ensemble_member"), None)
    dtypes = sorted({r["dtype"] for r in rows if r.get("impl") == "hypernet"}, key=["fp32", "tf32", "bf16"].index)
    hosts = sorted({bool(r.get("host_copy")) for r in rows if r.get("impl") == "hypernet"})
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [3, 3, 2]})
    _plot_generation_ratio(payload, ax3)

    # left: Fig 5.4 shape, 10..100 nets
    for ax, nmax, title in ((ax1, 100, "10-100 nets (thesis Fig 5.4 shape)"), (ax2, float("inf"), "up to 10^5 nets (Fig 5.5 shape)")):
        for dt in dtypes:
            for host in hosts:
                x, y = _series(rows, "hypernet", dt, host, nmax)
                if x and (ax is ax2 or (dt == "fp32")):
                    ax.plot(x, y, "o-", label=f"HyperNet batched {dt}{' + copy to host' if host else ''}")
        x, y = _series(rows, "reference", "fp32", False, nmax)
        if x:
            ax.plot(x, y, "k:", marker="x", label="minimal batched reference fp32")
        x, y = _series(rows, "loop", "fp32", False, nmax)
        if x:
            ax.plot(x, y, "s--", color="tab:red", label="one net per call (Python loop), measured")
        if member:
            ns = sorted({r["n"] for r in rows if r.get("impl") == "hypernet" and r["n"] <= nmax})
            if ns:
                ax.plot(ns, [n * member["seconds"] for n in ns], "v--", color="tab:brown",
                        label=f"ensemble: N x one member ({member['steps']} steps, lower bound)")
        tx = [p["n"] for p in thesis if p["n"] <= nmax]
        if tx:
            ty = [p["seconds"] for p in thesis if p["n"] <= nmax]
            ax.plot(tx, ty, "*", ms=14, color="tab:purple", label="thesis HyperNet (A10)")
            for x, y in zip(tx, ty):
                ax.annotate(f"{y:g} s", (x, y), textcoords="offset points", xytext=(8, -3), fontsize=7, color="tab:purple")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of MaskNets N")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"MaskNet generation, structure {payload.get('structure')} on {payload.get('device')}\n{_stamp(payload)}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _plot_generation_ratio(payload: dict, ax) -> None:
    """HyperNet / reference kernel (the generation target: <= 1.0 at N = 10^4) against N."""
    ratios = [q for q in payload.get("ratios") or [] if isinstance(q, dict) and q.get("ratio") is not None]
    for key in sorted({(q["dtype"], bool(q.get("host_copy"))) for q in ratios}):
        pts = sorted((q["n"], q["ratio"]) for q in ratios if (q["dtype"], bool(q.get("host_copy"))) == key)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{key[0]}{' + host' if key[1] else ''}")
    ax.axhline(1.0, color="tab:red", ls="--", lw=1, label="target at N = 10^4: <= 1.0")
    ax.set_xscale("log")
    ax.set_xlabel("number of MaskNets N")
    ax.set_ylabel("HyperNet / reference kernel (time)")
    ax.set_title("ratio to the roof (same run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def plot_batched_apply(payload: dict, out: Path) -> Path:
    rows = [r for r in payload["rows"] if "images_per_s" in r]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for key in sorted({(r["impl"], r["dtype"], r.get("size")) for r in rows}):
        pts = sorted((r["k"], r["images_per_s"]) for r in rows if (r["impl"], r["dtype"], r.get("size")) == key)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{key[0]} {key[1]} {key[2]}^2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("K users' nets in one call")
    ax.set_ylabel("images / s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"applying K different MaskNets ({payload.get('device')})\n{_stamp(payload)}", fontsize=7.5)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _generic_rows(payload: dict) -> list[dict]:
    rows = payload.get("rows") or payload.get("results") or []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def plot_generic(payload: dict, out: Path, value_keys: tuple[str, ...], title: str) -> Path | None:
    """Horizontal bars of the first recognised value in each row, labelled by its string/int fields."""
    rows = _generic_rows(payload)
    bars = []
    for r in rows:
        key = next((k for k in value_keys if isinstance(r.get(k), (int, float))), None)
        if key is None:
            continue
        label = " ".join(f"{v}" for k, v in r.items() if isinstance(v, (str, int, bool)) and not isinstance(v, float)
                         and k not in value_keys and len(str(v)) < 24)
        bars.append((label[:70], float(r[key]), key))
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(bars) + 1.8))
    ax.barh(range(len(bars)), [b[1] for b in bars], color="tab:blue")
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(", ".join(sorted({b[2] for b in bars})))
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.set_title(f"{title}\n{_stamp(payload)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_export(payload: dict, out: Path) -> Path | None:
    """bench_export.py's summary: files/s per format and precision (one bar group per N) and, when the JSON has the
    roof, the ratio whole export / bare write of the same files (target: <= 1.2 for 10^4 ONNX fp32)."""
    summary = [r for r in payload.get("summary") or [] if isinstance(r, dict) and "files_per_s_median" in r]
    if not summary:
        return plot_generic(payload, out, ("files_per_s", "seconds"), "export: files/s")
    ns = sorted({r["n"] for r in summary})
    keys = sorted({(r["format"], r["precision"]) for r in summary})
    has_ratio = any(r.get("ratio_to_bare_write_median") is not None for r in summary)
    fig, axes = plt.subplots(1, 2 if has_ratio else 1, figsize=(14 if has_ratio else 9, 4.8), squeeze=False)
    width = 0.8 / len(ns)
    xs = [i + width * (len(ns) - 1) / 2 for i in range(len(keys))]
    for ax, field, ylabel in ((axes[0][0], "files_per_s_median", "files / s (median over runs)"),
                              *(((axes[0][1], "ratio_to_bare_write_median", "whole export / bare write of the same files"),)
                                if has_ratio else ())):
        for j, n in enumerate(ns):
            vals = [next((r.get(field) or 0 for r in summary if (r["format"], r["precision"], r["n"]) == (*k, n)), 0)
                    for k in keys]
            ax.bar([i + j * width for i in range(len(keys))], vals, width, label=f"N = {n}")
        ax.set_xticks(xs, [f"{f}\n{p}" for f, p in keys], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    if has_ratio:
        axes[0][1].axhline(1.2, color="tab:red", ls="--", lw=1, label="target (10^4 ONNX fp32): <= 1.2")
        axes[0][1].set_title("ratio to the roof (bare write, same run)", fontsize=9)
    for ax in axes[0]:
        ax.legend(fontsize=8)
    fig.suptitle(f"export throughput (whole issue_users call)\n{_stamp(payload)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_apply(payload: dict, out: Path) -> Path | None:
    """bench_apply.py: latency and ratio to the sgemm roof vs image side ('net'), the photo end to end ('e2e')."""
    rows = _generic_rows(payload)
    net = [r for r in rows if r.get("section") == "net" and isinstance(r.get("ms"), (int, float))]
    e2e = [r for r in rows if r.get("section") == "e2e" and isinstance(r.get("total_ms"), (int, float))]
    if not net:
        return plot_generic(payload, out, ("ms", "ms_per_image", "latency_ms", "seconds"), "on-device apply latency")
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(18, 5.2), gridspec_kw={"width_ratios": [3, 3, 2]})
    variants = sorted({(r.get("runtime"), r.get("format"), r.get("precision")) for r in net}, key=str)
    colors = {v: plt.cm.tab10(i % 10) for i, v in enumerate(variants)}  # one colour per variant, style per threads
    for key in sorted({(r.get("runtime"), r.get("format"), r.get("precision"), r.get("threads")) for r in net}, key=str):
        mine = sorted((r for r in net if (r.get("runtime"), r.get("format"), r.get("precision"), r.get("threads")) == key),
                      key=lambda r: r["size"])
        style = "o-" if key[3] == 1 else "o--"
        ax1.plot([r["size"] for r in mine], [r["ms"] for r in mine], style, color=colors[key[:3]],
                 label=f"{key[1]} {key[2]} {key[3]}t", ms=4)
        rat = [r for r in mine if r.get("ratio_to_sgemm") is not None]
        if rat:
            ax3.plot([r["size"] for r in rat], [r["ratio_to_sgemm"] for r in rat], style, color=colors[key[:3]],
                     label=f"{key[1]} {key[2]} {key[3]}t", ms=4)
    sizes = sorted({r["size"] for r in net})
    for ax in (ax1, ax3):
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(v) for v in sizes])
        ax.minorticks_off()
        ax.set_xlabel("image side (px)")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("ms per image (median)")
    ax1.legend(fontsize=6, ncol=2)
    ax1.set_title("MaskNet per image (solid: 1 thread, dashed: more)", fontsize=9)
    if ax3.lines:
        ax3.axhline(0.8, color="tab:red", lw=1, ls=":", label="target 112^2 fp32 .onnx: >= 0.8")
        ax3.set_ylabel("GFLOP/s (spec FLOPs) / sgemm GFLOP/s, same threads")
        ax3.legend(fontsize=6, ncol=2)
        ax3.set_title("ratio to the sgemm roof (same run)", fontsize=9)
    else:
        ax3.text(0.5, 0.5, "no sgemm roof in this JSON", ha="center", transform=ax3.transAxes)
    if e2e:
        roofed = all(r.get("ratio_to_roof") is not None for r in e2e)
        field = "ratio_to_roof" if roofed else "total_ms"
        ax2.barh(range(len(e2e)), [r[field] for r in e2e], color="tab:green")
        ax2.set_yticks(range(len(e2e)), [f"{r.get('variant')} {r.get('threads')}t" for r in e2e], fontsize=7)
        ax2.invert_yaxis()
        if roofed:
            ax2.axvline(1.5, color="tab:red", lw=1, ls=":", label="target <= 1.5")
            ax2.legend(fontsize=7)
        ax2.set_xlabel("end to end / Pillow decode + encode of the photo" if roofed else "ms per photo, end to end")
        ax2.grid(True, axis="x", alpha=0.3)
        ax2.set_title(f"{e2e[0].get('megapixels', 12):g} MP photo end to end", fontsize=9)
    else:
        ax2.axis("off")
    fig.suptitle(f"on-device apply (onnxruntime)\n{_stamp(payload)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


PLOTTERS = {
    "generation": plot_generation,
    "batched_apply": plot_batched_apply,
    "export": plot_export,
    "apply": plot_apply,
}


def plot_dir(folder: Path) -> list[Path]:
    """Plot every known results file in ``folder``; prints what it skipped and why."""
    made = []
    for name, fn in PLOTTERS.items():
        payload = read_json(folder / f"{name}.json")
        if payload is None:
            print(f"plots: {name}.json not in {folder}, skipped")
            continue
        try:
            path = fn(payload, folder / f"{name}.png")
        except (KeyError, TypeError, ValueError) as e:
            print(f"plots: {name}.json has an unexpected layout ({type(e).__name__}: {e}), skipped")
            continue
        if path is None:
            print(f"plots: nothing plottable in {name}.json, skipped")
        else:
            made.append(path)
            print(f"plots: wrote {path}")
    return made


if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    plot_dir(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS)
