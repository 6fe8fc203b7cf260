"""PNG figures for the reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def accuracy_bars(path: Path, groups: list[str], series: dict[str, list[tuple[float | None, float | None]]],
                  title: str, thesis: list[float | None] | None = None) -> Path:
    """groups on the x axis; series {attacker: [(mean, sd) per group]}; thesis values as black ticks."""
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(groups) * max(1, len(series)) / 2 + 2), 3.6))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for k, (name, vals) in enumerate(series.items()):
        m = [np.nan if v[0] is None else v[0] for v in vals]
        s = [0 if v[1] is None else v[1] for v in vals]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, m, width, yerr=s, capsize=2, label=name)
    if thesis:
        for i, t in enumerate(thesis):
            if t is not None:
                ax.hlines(t, i - 0.45, i + 0.45, colors="k", linestyles="--", linewidth=1.2,
                          label="thesis" if i == next(j for j, v in enumerate(thesis) if v is not None) else None)
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("target accuracy (clean test faces)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def heatmaps(path: Path, mats: dict[str, np.ndarray], title: str, xlabel: str = "InvNet trained on net j",
             ylabel: str = "target protected by net i", ticks: list[str] | None = None) -> Path:
    n = len(mats)
    k = max(m.shape[0] for m in mats.values())
    side = 3.4 if k <= 5 else 5.0  # room for the cell labels of a 10x10 matrix
    fig, axes = plt.subplots(1, n, figsize=((side + 0.3) * n, side), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        labels = ticks or [str(i) for i in range(m.shape[0])]
        ax.set_xticks(range(m.shape[1]), labels[:m.shape[1]], fontsize=7)
        ax.set_yticks(range(m.shape[0]), labels[:m.shape[0]], fontsize=7)
        if m.shape[0] <= 12:
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    if not np.isnan(m[i, j]):
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6 if m.shape[0] <= 6 else 5,
                                color="w" if m[i, j] < 0.6 else "k")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def face_grid(path: Path, rows: dict[str, torch.Tensor], title: str, n: int = 6) -> Path:
    """rows {label: (B, 3, H, W) in [0, 1]}; the first n columns."""
    labels = list(rows)
    cols = min(n, min(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(labels), cols, figsize=(1.5 * cols, 1.55 * len(labels)), squeeze=False)
    for r, lab in enumerate(labels):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(rows[lab][c].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(lab, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def lines(path: Path, x: list, series: dict[str, list[float | None]], title: str, xlabel: str, ylabel: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, ys in series.items():
        ax.plot(x, [np.nan if y is None else y for y in ys], marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
