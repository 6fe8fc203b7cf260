"""Shared fixtures: a tiny trained checkpoint (seconds on CPU) and paths to optional real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("HYPEROBF_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared; the test is skipped when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (real data/models are not in the repo)")
    return p


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A HyperNet over the tiny spec, trained for 2 steps on the embedded synthetic faces."""
    from hyperobf.train.config import TrainConfig
    from hyperobf.train.loop import train

    cfg = TrainConfig(structure="tiny", epochs=1, steps_per_epoch=2, batch_images=4, nets_per_step=2)
    out = tmp_path_factory.mktemp("tiny_run")
    return train(cfg, out).checkpoint
