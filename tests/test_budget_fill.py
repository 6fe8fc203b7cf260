"""A net trained with a fill (TrainConfig.budget_fill) ships with it: the budget rule scales its δ *up* to ρ, by at
most the fill written into its model's metadata — numpy (device) and torch (evaluation) alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hyperobf.device_runtime import budget as B
from hyperobf.model_meta import PREFIX, MetadataError, build_metadata, parse_metadata
from hyperobf.spec import builtin_spec


def _faces(n: int, seed: int = 0) -> np.ndarray:
    """Smooth 8-bit 'faces' (N, 3, 32, 32) in [0.2, 0.8]."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, 3, 8, 8)).astype(np.float32)
    x = np.kron(base, np.ones((1, 1, 4, 4), np.float32)) * 0.6 + 0.2
    return np.round(x * 255) / 255


def test_fill_scales_a_small_delta_up_to_the_budget_on_both_sides():
    from hyperobf.eval.limit import fit_budget as fit_torch

    x = _faces(4)
    d = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32) * 0.008  # uses a sliver of ρ
    rho = 0.01
    s1, d1 = B.fit_scale(x, d, rho, 0.05)
    assert np.all(s1 == 1.0) and np.all(d1 < 0.5 * rho)  # without a fill: as the net gave it
    s4, d4 = B.fit_scale(x, d, rho, 0.05, s_max=4.0)
    assert np.all(s4 > 1.0) and np.all(d4 <= rho) and np.all(d4 > 0.8 * rho)  # filled to the budget
    got = B.fit_budget(x, d, rho, 0.05, s_max=4.0)
    want = fit_torch(torch.from_numpy(x), torch.from_numpy(d), rho, 0.05, s_max=4.0).numpy()
    assert np.abs(np.round(got * 255) - np.round(want * 255)).max() <= 1  # one rule (≤ 1 level at a midpoint)
    big = B.fit_budget(x, d * 100, 1.0, 0.05, s_max=4.0)
    assert np.abs(big - x).max() <= 0.05 + 0.5 / 255 + 1e-6  # the per-pixel clip holds after the scale


class _Fixed:
    def __init__(self, d: np.ndarray, fill: float) -> None:
        self.d, self.budget_fill = d, fill
        self.spec = type("S", (), {"rho_pixel": 0.05})()

    def delta(self, x: np.ndarray) -> np.ndarray:
        return self.d[: len(x)]


def test_budgeted_model_applies_the_nets_fill():
    x = _faces(3, seed=2)
    d = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32) * 0.008
    plain, filled = B.BudgetedModel(_Fixed(d, 1.0), 0.01), B.BudgetedModel(_Fixed(d, 4.0), 0.01)
    plain.delta(x), filled.delta(x)
    assert all(s == 1.0 for s in plain.scales) and all(1.0 < s <= 4.0 for s in filled.scales)
    assert all(0.8 * 0.01 < v <= 0.01 for v in filled.dssim)


def test_metadata_carries_the_fill():
    spec = builtin_spec("tiny", 0.05)
    assert PREFIX + "budget_fill" not in build_metadata(spec, "u", "0" * 64)  # every net before: no key
    meta = build_metadata(spec, "u", "0" * 64, budget_fill=4.0)
    assert parse_metadata(meta)["budget_fill"] == 4.0
    for bad in ("0.5", "\"4\"", "true", "100"):
        with pytest.raises(MetadataError, match="budget_fill"):
            parse_metadata({**meta, PREFIX + "budget_fill": bad})
    with pytest.raises(ValueError, match="budget_fill"):
        build_metadata(spec, "u", "0" * 64, budget_fill=0.5)


def test_export_writes_the_checkpoints_fill_and_the_runtime_reads_it(tiny_checkpoint, tmp_path):
    from hyperobf.device_runtime import load_model
    from hyperobf.export.issue import issue_users
    from hyperobf.train.checkpoint import load_checkpoint

    loaded = load_checkpoint(tiny_checkpoint)
    assert loaded.config.ship_fill == 1.0  # trained without a fill
    loaded.config.budget_fill = 3.0
    issue_users(loaded, 1, tmp_path / "m", formats=["onnx"], precisions=("fp32",), verify="all",
                seeds_file=tmp_path / "seeds.jsonl")
    row = json.loads((tmp_path / "m" / "manifest.jsonl").read_text().splitlines()[0])
    assert load_model(tmp_path / "m" / row["file"]).budget_fill == 3.0
