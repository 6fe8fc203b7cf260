"""Shared fixtures: a tiny trained checkpoint (seconds on CPU), paths to optional real data, the
device-runtime tests' model files and the PSP tests' engine and databases. Helpers without
fixtures live in runtime_support.py and psp_support.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from psp_support import BACKENDS, db_url_for

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


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny-spec MaskNet ONNX files with real metadata: {"dynamic": path, "fixed": path}."""
    from runtime_support import build_model

    d = tmp_path_factory.mktemp("runtime_models")
    return {"dynamic": build_model(d / "dyn.onnx", "dynamic"), "fixed": build_model(d / "fixed.onnx", "fixed")}


@pytest.fixture(scope="session")
def psp_engine(tiny_checkpoint):  # noqa: ANN001, ANN201
    """One GenerationEngine over the tiny checkpoint for the whole session (CPU)."""
    from hyperobf.psp.engine import GenerationEngine

    return GenerationEngine.from_checkpoint(tiny_checkpoint, "cpu")


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:  # noqa: ANN001
    """A fresh SQLite file, or an emptied PostgreSQL schema (skipped without $HYPEROBF_TEST_PG_URL)."""
    return db_url_for(request.param, tmp_path)
