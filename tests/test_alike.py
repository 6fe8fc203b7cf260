"""`hyperobf eval alike`: how alike a checkpoint's per-user nets are, and how saturated their δ."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from hyperobf.cli import app


def test_alike_reports_saturation_of_the_issued_nets(tiny_checkpoint, tmp_path):
    from hyperobf.eval.alike import issued_similarity
    from hyperobf.models.masknet import apply_shared_input
    from hyperobf.train.checkpoint import load_checkpoint

    loaded = load_checkpoint(tiny_checkpoint)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    z = torch.randn(4, loaded.source.z_dim, generator=torch.Generator().manual_seed(1))
    r = issued_similarity(loaded, z, x)
    with torch.no_grad():
        d = apply_shared_input(loaded.spec, loaded.source.issue(z), x) - x[None]
    assert 0 < r["saturation"] < 1
    assert r["saturation"] == float(((d / loaded.spec.rho_pixel) ** 2).mean())
    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(faces / f"{i}.png")
    res = CliRunner().invoke(app, ["eval", "alike", str(tiny_checkpoint), "--faces", str(faces), "--nets", "3"])
    assert res.exit_code == 0, res.output
    assert "saturation" in res.output and "one δ for" in res.output
