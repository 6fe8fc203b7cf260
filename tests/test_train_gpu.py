"""CUDA path (bf16 autocast, optional torch.compile): tiny runs train, stay in budget, and export. Needs a GPU."""

from __future__ import annotations

import math

import pytest
import torch
from _train_support import tiny_cfg, write_tiny_embedder

from hyperobf.train.checkpoint import load_checkpoint
from hyperobf.train.loop import train

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")


@pytest.mark.parametrize("compile_", [False, True])
def test_cuda_amp_feature_run(tmp_path, compile_):
    emb = write_tiny_embedder(tmp_path / "emb.onnx")
    cfg = tiny_cfg(device="cuda", amp=True, compile=compile_, objective="feature", embedder=str(emb),
                   structure="D", image_size=48, epochs=2, jpeg_prob=0.5, resize_prob=0.5)
    res = train(cfg, tmp_path / "run")
    last = res.metrics[-1]
    assert all(math.isfinite(last[k]) for k in ("J", "J1", "J2", "dssim"))
    assert last["holdout"]["delta_max"] <= cfg.rho_pixel + 1e-6
    loaded = load_checkpoint(res.checkpoint)  # loads on CPU for export
    params = loaded.source.issue(torch.randn(3, loaded.source.z_dim))
    assert all(v.shape[0] == 3 and v.device.type == "cpu" for v in params.values())


def test_cuda_resume_is_identical_when_deterministic(tmp_path):
    kw = dict(device="cuda", deterministic=True, amp=False)
    full = train(tiny_cfg(epochs=2, **kw), tmp_path / "full")
    train(tiny_cfg(epochs=1, **kw), tmp_path / "half")
    resumed = train(tiny_cfg(epochs=2, **kw), tmp_path / "half", resume=tmp_path / "half" / "checkpoint.pt")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(resumed.metrics) == strip(full.metrics)
