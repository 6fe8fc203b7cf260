"""The PSP load benchmark's figure (bench_psp_load.py): server CPU per issuance per structure and
database against the 2.5 ms target, and throughput with p50 / p99 latency, with the machine and
its load stamped underneath."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TARGET_MS = 2.5  # issue 16: server CPU per issuance, structure A


def plot_load(payload: dict, out: Path) -> Path:
    runs = payload["runs"]
    labels = [f"{r['structure']}\n{r['variant']}" + (f"\n{r['workers']} workers" if r.get("workers", 1) > 1 else "")
              for r in runs]
    x = range(len(runs))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(9, 1.3 * len(runs) + 5), 4.8))
    ax1.bar(x, [r["server_cpu_ms_per_issuance"] for r in runs], color="tab:blue", label="issuance")
    dl = [r.get("downloads", {}).get("server_cpu_ms_per_download") for r in runs]
    ax1.plot([i for i, v in zip(x, dl) if v is not None], [v for v in dl if v is not None], "o", color="tab:orange",
             label="download")
    ax1.axhline(TARGET_MS, color="tab:red", ls="--", lw=1, label=f"target {TARGET_MS} ms (A)")
    ax1.set_xticks(list(x), labels, fontsize=8)
    ax1.set_ylabel("server CPU per request (ms)")
    ax1.legend(fontsize=8)
    ax2.bar(x, [r["throughput_rps"] for r in runs], color="tab:green")
    ax2.set_ylabel("issuances / s")
    ax2.set_xticks(list(x), labels, fontsize=8)
    lat = ax2.twinx()
    lat.plot(list(x), [r.get("p50_ms") for r in runs], "s-", color="k", label="p50")
    lat.plot(list(x), [r.get("p99_ms") for r in runs], "^--", color="gray", label="p99")
    lat.set_ylabel("latency (ms)")
    lat.legend(fontsize=8, loc="upper right")
    m = payload.get("machine", {})
    fig.suptitle(f"PSP on loopback, concurrency {payload['settings']['concurrency']}, "
                 f"{payload['settings']['duration']:g} s per run", fontsize=10)
    fig.text(0.01, 0.01, f"{m.get('label', m.get('cpu', '?'))}; load {payload.get('load_start')} -> "
             f"{payload.get('load_end')}; {m.get('time', '')}", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
