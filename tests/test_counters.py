"""The attacker's counters (eval/counters.py): what each does to a protected photo, and the table's errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hyperobf.eval.counters import COUNTERS, blur, get_counter, gray, jpeg


def _img(n: int = 2, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear").clamp(0, 1)


@pytest.mark.parametrize("name", list(COUNTERS))
def test_every_counter_keeps_shape_and_range(name):
    x = _img()
    y = get_counter(name)(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_blur_and_resize_attenuate_a_high_frequency_delta():
    x = _img()
    noise = torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(1))) * 4 / 255  # a ±4/255 δ
    for name in ("blur", "resize50"):
        f = get_counter(name)
        # what is left of a high-frequency δ after the counter: far less than δ itself
        assert (f(x + noise) - f(x)).abs().mean() < 0.5 * noise.abs().mean(), name


def test_gray_is_luma_and_jpeg_quantises():
    x = _img()
    y = gray(x)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    assert torch.allclose(y[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    j = jpeg(x, 10)
    assert torch.equal(j, (j * 255).round() / 255) and not torch.equal(j, x)
    assert (jpeg(x, 95) - x).abs().mean() < (j - x).abs().mean()  # q10 loses more than q95


def test_blur_is_normalised():
    flat = torch.full((1, 3, 16, 16), 0.4)
    assert torch.allclose(blur(flat), flat, atol=1e-6)


def test_unknown_counter_lists_the_available_ones():
    with pytest.raises(ValueError, match="jpeg75"):
        get_counter("sharpen")
