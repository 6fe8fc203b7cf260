"""A fast export round trip over every structure in the registry (spec.STRUCTURES): checkpoint file ->
issue_users (ONNX and ORT, dynamic shape, every user verified against torch) -> the device runtime
loads each file by its manifest entry and reproduces the torch MaskNet on an input whose sides are
not the working size (strides, nearest upsampling and skip concatenations at an odd shape).

The checkpoints hold a *static* source (one MaskNet, untrained): export and runtime correctness do
not depend on the HyperNet, and the module then needs no generation at all (seconds per structure).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hyperobf.device_runtime import load_model
from hyperobf.export.issue import issue_users
from hyperobf.models.masknet import outputs_from_numpy
from hyperobf.spec import STRUCTURES, builtin_spec


@pytest.fixture(params=list(STRUCTURES))
def loaded(request, tmp_path):
    import torch

    from hyperobf.train.checkpoint import load_checkpoint, save_checkpoint
    from hyperobf.train.config import TrainConfig
    from hyperobf.train.sources import build_source

    torch.manual_seed(0)
    cfg = TrainConfig(structure=request.param, method="static")
    spec = builtin_spec(cfg.structure, cfg.rho_pixel)
    save_checkpoint(tmp_path / "checkpoint.pt", spec, cfg, build_source(spec, cfg))
    return load_checkpoint(tmp_path / "checkpoint.pt")


def test_export_round_trip_of_every_structure(loaded, tmp_path):
    spec = loaded.spec
    out = tmp_path / "models"
    report = issue_users(loaded, 2, out, formats=("onnx", "ort"), shape="dynamic", verify="all")
    assert {label: v["users_checked"] for label, v in report.verified.items()} == {"onnx": 2, "ort": 2}
    assert all(v["max_abs_diff"] <= 1e-5 for v in report.verified.values()), report.verified
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["structure"] for r in rows} == {spec.name}
    assert {r["spec_digest"] for r in rows} == {spec.digest()}

    weights = {k: v.detach().numpy()[None] for k, v in loaded.source.net.state_dict().items()}  # the one net
    m = spec.stride_product
    x = np.random.default_rng(1).random((1, 3, 3 * m, 5 * m), dtype=np.float32)  # not square, not 112²
    want_out, want_delta = outputs_from_numpy(spec, weights, x)
    for row in rows:
        model = load_model(out / row["file"], threads=1, manifest=out / "manifest.jsonl")
        assert model.spec == spec and model.meta["format"] == row["format"] and model.model_id == row["model_id"]
        got_out, got_delta = model.run(x)
        np.testing.assert_allclose(got_delta, want_delta[0], atol=1e-5)
        np.testing.assert_allclose(got_out, want_out[0], atol=1e-5)
        assert np.abs(got_delta).max() > 0  # the net does perturb: a zero δ would match trivially
