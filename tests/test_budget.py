"""The device's budget rule (device_runtime/budget.py, numpy) against the evaluation's (eval/limit.py, torch +
kornia): SSIM/DSSIM agreement, fit_budget parity, the whole-mode window rule, and the hooks in `protect`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hyperobf.cli import app
from hyperobf.device_runtime import ProtectOptions, load_model, protect
from hyperobf.device_runtime import budget as B
from hyperobf.presets import PRESETS
from runtime_support import astronaut, highpass_model

torch = pytest.importorskip("torch")
kornia = pytest.importorskip("kornia")


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _realish(n: int = 12, seed: int = 0) -> np.ndarray:
    """(n, 3, 112, 112) float32 on the 8-bit grid: the astronaut at several crops and scales, with a
    saturated white patch in half of them (where float32 E[x²] − μ² cancels worst)."""
    rng = np.random.default_rng(seed)
    img = astronaut()
    out = []
    for i in range(n):
        side = int(rng.integers(112, 400))
        x0, y0 = (int(v) for v in rng.integers(0, 512 - side, 2))
        a = np.asarray(img.crop((x0, y0, x0 + side, y0 + side)).resize((112, 112), Image.BILINEAR)).copy()
        if i % 2:
            a[10:50, 60:100] = 255
        out.append(a)
    return np.stack(out).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def _deltas(x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    smooth = _t(rng.normal(0, 0.15, x.shape).astype(np.float32))
    smooth = kornia.filters.gaussian_blur2d(smooth, (7, 7), (1.5, 1.5)).numpy()
    return {"gauss": rng.normal(0, 0.03, x.shape).astype(np.float32),
            "sign": (np.sign(rng.normal(size=x.shape)) * 0.05).astype(np.float32),
            "smooth": smooth}


def test_gaussian_window_is_kornias():
    k = kornia.filters.get_gaussian_kernel1d(11, 1.5, dtype=torch.float64)[0].numpy()
    assert np.abs(B.gaussian_window() - k).max() < 1e-15


@pytest.mark.parametrize("shape", [(3, 3, 112, 112), (2, 3, 37, 50), (1, 3, 300, 170), (1, 3, 7, 9), (2, 1, 16, 16)])
def test_blur_matches_kornia_reflect_blur(shape):
    a = np.random.default_rng(1).random(shape, dtype=np.float32)
    k = kornia.filters.get_gaussian_kernel1d(11, 1.5)
    want = kornia.filters.filter2d_separable(_t(a), k, k, border_type="reflect").numpy()
    assert np.abs(B.blur(a) - want).max() < 1e-6


def test_ssim_and_dssim_match_kornia_within_1e_5():
    from hyperobf.train.losses import dssim as dssim_torch

    rng = np.random.default_rng(2)
    x = _realish()
    cases = [(x, B.quantise(x + d)) for d in _deltas(x).values()]
    for shape in [(4, 3, 112, 112), (2, 3, 37, 50), (1, 3, 200, 150)]:  # random images, random distortions
        r = rng.random(shape, dtype=np.float32)
        cases.append((r, np.clip(r + rng.normal(0, 0.05, shape).astype(np.float32), 0, 1)))
    worst = 0.0
    for a, b in cases:
        want_map = kornia.metrics.ssim(_t(a), _t(b), 11, max_val=1.0).numpy()
        got_map = B.Reference(a).ssim_map(b)
        # per pixel, float32 rounding of E[x²] − μ² (σ² ≈ 0 in flat patches, against C2 = 9e-4) on both sides:
        # no worse than kornia's own float32 map is against float64
        exact = kornia.metrics.ssim(_t(a).double(), _t(b).double(), 11, max_val=1.0).numpy()
        assert np.abs(got_map - exact).max() <= max(2 * np.abs(want_map - exact).max(), 1e-5)
        assert np.abs(got_map - want_map).max() < 1e-3
        worst = max(worst, float(np.abs(B.dssim(a, b) - dssim_torch(_t(b), _t(a)).numpy()).max()))
        assert np.abs(B.ssim(a, b) - want_map.reshape(len(a), -1).mean(1)).max() < 2e-5
    assert worst < 1e-5, worst
    same = B.dssim(x, x)  # identical images: SSIM 1 but for kornia's eps 1e-12 in dark flat patches
    assert np.all(same < 5e-6) and np.abs(same - dssim_torch(_t(x), _t(x)).numpy()).max() < 1e-7


@pytest.mark.slow  # > 5 s on 2 shared cores (pytest --durations)
@pytest.mark.parametrize("rho", [0.007, 0.017])
def test_fit_budget_matches_eval_limit(rho):
    """numpy vs torch on the same x, δ: the same 8-bit output, except where a bisection midpoint's DSSIM lies
    within float32 noise of ρ (the two sides may then keep scales one bisection step apart: ≤ 1 level)."""
    from hyperobf.eval.limit import fit_budget as fit_torch
    from hyperobf.train.losses import dssim as dssim_torch

    x = _realish(12, seed=3)
    differing = total = 0
    for name, d in _deltas(x, seed=4).items():
        got = B.fit_budget(x, d, rho, 0.05)
        want = fit_torch(_t(x), _t(d), rho, 0.05).numpy()
        levels = np.abs(np.round(got * 255) - np.round(want * 255)).reshape(len(x), -1).max(1)
        assert levels.max() <= 1, name
        differing += int((levels > 0).sum())
        total += len(x)
        assert np.all(B.dssim(x, got) <= rho)  # the rule holds on the numpy side …
        assert np.all(dssim_torch(_t(got), _t(x)).numpy() <= rho + 1e-5)  # … and by kornia, up to its noise
        s, d_at = B.fit_scale(x, d, rho, 0.05)
        if name != "sign":  # (a sign pattern scaled to ~1.5 levels jumps between 1 and 2 levels on rounding)
            assert np.all((s == 1.0) | (d_at > 0.8 * rho)), name  # over budget: scaled close to the budget
        assert np.allclose(d_at, B.dssim(x, got), atol=1e-9)
    assert differing <= 0.1 * total, (differing, total)


def test_fit_budget_edges():
    x = _realish(4, seed=5)
    d = np.full_like(x, 0.2)  # far beyond the clip: clipped to ρ_pixel first
    s, _ = B.fit_scale(x, d, 1.0, 0.05)
    assert np.all(s == 1.0)
    out = B.fit_budget(x, d, 1.0, 0.05)
    assert np.abs(out - x).max() <= 0.05 + 0.5 / 255 + 1e-6  # |δ| ≤ ρ_pixel, then 8-bit rounding
    tiny = B.fit_budget(x, _deltas(x)["sign"], 1e-9, 0.05)
    assert np.array_equal(tiny, x)  # nothing fits: s = 0, the original
    s_lo, _ = B.fit_scale(x, _deltas(x)["gauss"], 0.007, 0.05)
    s_hi, _ = B.fit_scale(x, _deltas(x)["gauss"], 0.017, 0.05)
    assert np.all(s_hi >= s_lo) and np.all(s_lo < 1)
    with pytest.raises(ValueError, match="one shape"):
        B.fit_scale(x, d[:, :, :10], 0.01, 0.05)


def test_window_max_mean_is_the_brute_force_max():
    d = np.random.default_rng(6).random((2, 23, 31))
    for win in (5, 23, 40):
        wh, ww = min(win, 23), min(win, 31)
        brute = [max(d[m, i:i + wh, j:j + ww].mean() for i in range(23 - wh + 1) for j in range(31 - ww + 1))
                 for m in range(2)]
        assert np.allclose(B.window_max_mean(d, win), brute)


def test_windows_rule_bounds_every_face_sized_window_and_equals_the_face_rule_on_one_window():
    x = _realish(2, seed=7)
    d = _deltas(x, seed=8)["gauss"]
    # an image the size of one window: the window rule is the face rule
    out_w, s_w, _ = B.fit_budget_windows(x, d, 0.012, 0.05, 112)
    s_f, _ = B.fit_scale(x, d, 0.012, 0.05)
    assert np.array_equal(s_w, s_f) and np.array_equal(out_w, B.fit_budget(x, d, 0.012, 0.05))
    # a wider image: every 112² window of the result is within ρ (checked one window at a time)
    wide = np.concatenate([x[:1], x[1:]], axis=3)  # (1, 3, 112, 224)
    dw = np.concatenate([d[:1], d[1:] * 0.2], axis=3)  # the left half carries most of δ
    out, s, worst = B.fit_budget_windows(wide, dw, 0.012, 0.05, 112)
    assert 0 < s[0] < 1 and worst[0] <= 0.012
    per = [B.dssim(wide[..., j:j + 112], out[..., j:j + 112])[0] for j in range(0, 113, 8)]
    assert max(per) <= 0.012 + 5e-4  # a crop sees reflect padding at its edges where the map saw neighbours
    assert max(per) > 0.009  # and the budget was used, not undershot


def test_resolve_budget():
    assert B.resolve_budget("low") == (PRESETS["low"].rho, "low")
    assert B.resolve_budget(PRESETS["high"].rho) == (PRESETS["high"].rho, "high")
    assert B.resolve_budget(0.01) == (0.01, None)
    assert B.resolve_budget(np.float32(0.25)) == (0.25, None) and B.resolve_budget(1) == (1.0, None)
    assert B.resolve_budget(None) == (None, None)
    for bad, msg in [("extreme", "unknown preset"), (0.0, r"\(0, 1\]"), (1.5, r"\(0, 1\]"), (-0.1, r"\(0, 1\]"),
                     (True, "preset name or a DSSIM"), ("0.01", "unknown preset")]:
        with pytest.raises(ValueError, match=msg):
            B.resolve_budget(bad)
    with pytest.raises(ValueError, match="unknown preset"):
        ProtectOptions(budget="ultra")
    assert ProtectOptions().preset == B.DEFAULT_PRESET and ProtectOptions(budget=None).rho is None
    assert ProtectOptions(budget="max").rho == PRESETS["max"].rho == 0.025


class _Counting:
    """A model stand-in whose δ is fixed noise; counts calls."""

    def __init__(self, d: np.ndarray) -> None:
        self.d, self.calls = d, 0

    def delta(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.d[: len(x)]


def test_budgeted_model_keeps_each_face_within_and_caches():
    x = _realish(3, seed=9)
    inner = _Counting(_deltas(x, seed=10)["sign"])
    inner.spec = type("S", (), {"rho_pixel": 0.05})()
    m = B.BudgetedModel(inner, 0.012)
    d = m.delta(x)
    assert np.all(B.dssim(x, x + d) <= 0.012) and len(m.scales) == 3 and all(0 < s < 1 for s in m.scales)
    assert np.allclose(m.dssim, B.dssim(x, x + d), atol=1e-9)
    assert np.allclose(np.round((x + d) * 255), (x + d) * 255, atol=1e-3)  # x + δ' is an 8-bit image
    assert np.array_equal(m.delta(x.copy()), d) and inner.calls == 1  # face.py may ask twice for one crop


class _FixedDetector:
    """One face: the ArcFace template scaled by 1.5 and shifted (as in test_refine)."""

    def detect(self, img):  # noqa: ANN001
        from hyperobf.device_runtime.align import ARCFACE_112
        from hyperobf.device_runtime.detect import Face

        return [Face((30.0, 30.0, 198.0, 198.0), 0.99, (ARCFACE_112 * 1.5 + 30.0).astype(np.float32))]


def test_protect_face_mode_applies_the_budget_to_the_aligned_crop(tmp_path):
    from hyperobf.device_runtime.face import aligned_crops

    m = load_model(highpass_model(tmp_path / "hp.onnx", gain=30.0), threads=1)
    img = astronaut().crop((100, 0, 400, 260))
    faces = _FixedDetector().detect(img)
    x = aligned_crops(img, faces, 112)[0].astype(np.float32).transpose(0, 3, 1, 2) / 255
    raw = B.dssim(x, B.quantise(x + m.delta(x)))[0]
    seen = {}
    for budget in (None, "low", "high"):
        r = protect(img, m, _FixedDetector(), ProtectOptions(mode="face", budget=budget))
        assert r.mode == "face" and len(r.dssim) == len(r.scales) == 1
        seen[budget] = r
    assert raw > PRESETS["high"].rho  # the net alone is over every preset …
    assert seen[None].scales == [1.0] and seen[None].rho is None
    assert 0 < seen["low"].scales[0] < seen["high"].scales[0] < 1  # … so each budget scaled δ down
    assert seen["low"].rho == PRESETS["low"].rho and "budget" in seen["low"].timings
    assert seen[None].budget_dssim == [] and 0.5 * PRESETS["low"].rho < seen["low"].budget_dssim[0] <= PRESETS["low"].rho
    # measured on the written photo: the budget shows there too, in order
    assert seen["low"].dssim[0] < seen["high"].dssim[0] < seen[None].dssim[0]
    assert seen["low"].dssim[0] <= PRESETS["low"].rho


def test_protect_whole_mode_bounds_the_working_image(tmp_path):
    m = load_model(highpass_model(tmp_path / "hp.onnx", gain=30.0), threads=1)
    img = astronaut()
    free = protect(img, m, options=ProtectOptions(mode="whole", budget=None))
    low = protect(img, m, options=ProtectOptions(mode="whole", budget="low"))
    assert free.scales == [1.0] and free.dssim[0] > PRESETS["low"].rho
    assert 0 < low.scales[0] < 1 and low.dssim[0] <= PRESETS["low"].rho + 1e-3  # re-measured after upsampling
    # the working image itself obeys the rule exactly
    h, w = low.work_shape
    small = np.asarray(img.resize((w, h), Image.BILINEAR, reducing_gap=3.0)).astype(np.float32).transpose(2, 0, 1)[None] / 255
    d = m.delta(small)
    _, _, worst = B.fit_budget_windows(small, d, PRESETS["low"].rho, m.spec.rho_pixel, 112)
    assert worst[0] <= PRESETS["low"].rho


def test_cli_preset_budget_lines_and_errors(tmp_path, models):
    photo = tmp_path / "a.png"
    astronaut().resize((200, 200)).save(photo)
    run = CliRunner()
    r = run.invoke(app, ["protect", str(photo), "-m", str(models["dynamic"]), "-o", str(tmp_path / "o1")])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == ("note: budget preset mid (DSSIM <= 0.012) on each aligned 112x112 face (whole mode: each "
                        "face-sized window); perturbations over it are scaled down (default; --preset low|mid|high|max "
                        "or --budget RHO to choose)")
    assert re.fullmatch(r"protected: \S*a\.png -> a_protected\.png  \(whole; DSSIM written/working 0\.\d{4}/0\.\d{4}"
                        r"( \(scaled to 0\.\d+\))?, worst face-sized window\)", lines[1]), lines[1]
    r = run.invoke(app, ["protect", str(photo), "-m", str(models["dynamic"]), "-o", str(tmp_path / "o2"),
                         "--budget", "0.004"])
    assert r.exit_code == 0 and r.stdout.startswith("note: budget DSSIM <= 0.004 on each") and "(as asked)" in r.stdout
    for args, msg in [(["--preset", "ultra"], "error: unknown preset 'ultra'; choose one of low, mid, high, max"),
                      (["--preset", "low", "--budget", "0.01"], "error: give --preset or --budget, not both"),
                      (["--budget", "0"], "error: DSSIM budget must be in (0, 1], got 0.0"),
                      (["--budget", "2"], "error: DSSIM budget must be in (0, 1], got 2.0")]:
        r = run.invoke(app, ["protect", str(photo), "-m", str(models["dynamic"]), "-o", str(tmp_path / "bad"), *args])
        assert r.exit_code != 0 and r.stderr.strip() == msg, (args, r.output)
        assert "Traceback" not in r.output and not (tmp_path / "bad").exists()


def test_result_line_states_each_faces_dssim():
    from hyperobf.cli.protect_cmd import result_lines
    from hyperobf.device_runtime.batch import FileResult

    r = FileResult(Path("a.jpg"), Path("a_protected.jpg"), "protected", mode="face", faces=2,
                   dssim=[0.0044, 0.0051], scales=[0.3, 1.0], budget_dssim=[0.012, 0.0097])
    assert result_lines(r) == ["protected: a.jpg -> a_protected.jpg  (face, 2 face(s); DSSIM written/crop "
                               "0.0044/0.0120 (scaled to 0.30), 0.0051/0.0097)"]
    r = FileResult(Path("b.png"), Path("b_protected.png"), "protected", mode="whole", dssim=[0.0069],
                   scales=[0.99995], budget_dssim=[0.0070])
    assert result_lines(r) == ["protected: b.png -> b_protected.png  (whole; DSSIM written/working 0.0069/0.0070 "
                               "(scaled to 0.9999), worst face-sized window)"]  # never a "1.00" that was cut
    r = FileResult(Path("c.png"), Path("c_protected.png"), "protected", mode="whole", dssim=[0.02], scales=[1.0])
    assert result_lines(r) == ["protected: c.png -> c_protected.png  (whole; DSSIM written 0.0200, "
                               "worst face-sized window)"]  # no budget (library call): the written value only


def test_bench_budget_smoke(tmp_path):
    """The benchmark harness on two faces (never asserts on timings)."""
    import json
    import sys

    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks import bench_budget

    bench_budget.main(["--n", "2", "--repeats", "1", "--out", str(tmp_path)])
    d = json.loads((tmp_path / "budget.json").read_text())
    assert {r["what"] for r in d["rows"]} == {"ssim", "reference", "fit"} and len(d["rows"]) == 3 * len(PRESETS)
    assert all(r["wall_ms"] > 0 for r in d["rows"]) and set(d["parity"]) == set(PRESETS)
    assert all(p["equal"] + p["differing"] == 2 and p["max_abs_dssim_np_vs_kornia"] < 1e-5 for p in d["parity"].values())
    assert "machine" in d and len(d["load_start"]) == 3
