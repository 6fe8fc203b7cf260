"""The web client (web/, issue 17): the same numbers as the Python runtime, nothing leaving the device.

Two layers:

* Node (needs only ``node``): the page's pure modules against Python — canonical JSON and float repr,
  Python's ``:.2f``, spec digests, metadata checks, protection lines, Pillow's resize, the δ add, SSIM.
* Headless Chromium (needs ``chromium`` and ``npm ci`` in web/: onnxruntime-web + playwright-core):
  the real page, served from 127.0.0.1, driven by web/test/drive.mjs in one browser session —
  δ against the Python runtime, a 12 MP photo end to end, downloads without EXIF, hostile input,
  and a record of every network request (plus a proxy that catches anything leaving for another
  host). Those tests are in test_web_browser.py (marked slow); helpers in web_support.py.

Each test skips with the reason when what it needs is absent.
"""

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime_support import build_model
from web_support import canonical, f64hex, image_array, raw_file, run_node, tampered_models


def test_canonical_json_and_float_repr_match_python(tmp_path):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64, endpoint=True).view(np.float64)
    floats = [float(x) for x in bits if math.isfinite(x)]
    floats += [0.03, 1e-05, 1e-4, 0.0001, 9.999e-05, 1e-07, 1.0, 2.0, 0.1, 0.5, 1e15, 1e16, 1e17, 123456789.0,
               1234567890123456.0, 12345678901234567.0, 5e-324, 1.7976931348623157e308, -0.0, 0.0, -2.5e-06, 3.0e22,
               0.012, 0.007, 0.017, 0.911, 0.0072]
    floats += [round(float(v), int(d)) for v, d in zip(rng.normal(0, 10, 500), rng.integers(0, 8, 500))]
    reprs = run_node([{"op": "float_repr", "hex": [f64hex(x) for x in floats]}], tmp_path)[0]
    bad = [(x, repr(x), js) for x, js in zip(floats, reprs) if repr(x) != js]
    assert not bad, bad[:10]

    values = [
        {"b": 1, "a": [1.0, 2, 0.03, 1e-05, -0.0, 1e16, 12345678901234567890], "é": "x"},
        {"s": "quote\" back\\ nl\n tab\t ctl\x01 del\x7f é 😀 \u2028", "z": None, "t": True, "f": False},
        {"Z": 1, "a": 2, "é": 3, "\U0001F600": 4, "\uffff": 5, "A": {"y": [], "x": {}}},
        [float("inf"), float("-inf"), float("nan")],
    ]
    texts = [json.dumps(v) for v in values]  # Python's default separators (", ", ": "), unsorted
    texts += ['  {"b" : 1.5e3 , "a":[ 1E-7, -0 , 0.0, 10 ]}\n', '"\\ud83d\\ude00 \\/ \\u00e9"', '[1e400, -1e400]',
              '{"dup": 1, "dup": 2}']
    got = run_node([{"op": "dumps", "texts": texts}], tmp_path)[0]
    want = [canonical(json.loads(t)) for t in texts]
    assert got == want


def test_python_fixed_point_format(tmp_path):
    rng = np.random.default_rng(1)
    xs = [0.125, 0.375, 0.625, 0.875, 2.675, 1.005, 0.5, 1.5, 2.5, 0.0001, 0.99995, -0.125, -0.0, 0.0, 1.0,
          0.00005, 0.00015, 123.456, 1e-20, 1e20, 0.9109999999999999]
    xs += [float(v) for v in rng.uniform(0, 1, 300)] + [k / 256 for k in range(257)] + [k / 20000 for k in range(0, 400, 7)]
    items = [(f64hex(x), d) for x in xs for d in (0, 2, 4)]
    got = run_node([{"op": "format_fixed", "items": items}], tmp_path)[0]
    want = [f"{x:.{d}f}" for x in xs for d in (0, 2, 4)]
    bad = [(i, g, w) for i, g, w in zip(items, got, want) if g != w]
    assert not bad, bad[:10]


def _spec_variants() -> list[str]:
    from hyperobf.spec import BUILTIN, builtin_spec

    texts = []
    for name in BUILTIN:
        for rho in (0.03, 1e-05, 0.1, 1.0, 0.5, 0.123456789):
            texts.append(json.dumps(builtin_spec(name, rho).to_dict(), indent=1))  # unsorted, with whitespace
    d = builtin_spec("A").to_dict()
    for layer in d["layers"]:  # defaults left out: Python fills them back in before taking the digest
        for k, default in (("stride", 1), ("upsample", 1), ("act", "relu"), ("kernel", 3)):
            if layer.get(k) == default:
                del layer[k]
    del d["spec_format"], d["input_size"]
    texts.append(json.dumps(d))
    u = builtin_spec("U").to_dict()
    u["layers"] = [dict(reversed(list(layer.items()))) for layer in u["layers"]]
    texts.append(json.dumps(u))
    return texts


def _invalid_specs() -> list[str]:
    from hyperobf.spec import builtin_spec

    base = builtin_spec("tiny").to_dict()
    out = []
    for mutate in (
        lambda d: d["layers"][1].update(in_ch=5),  # channel mismatch
        lambda d: d["layers"][0].update(colour="red"),  # unknown field
        lambda d: d.update(spec_format=3),
        lambda d: d.update(spec_format=2),  # no skip: must be format 1
        lambda d: d.update(rho_pixel=0),
        lambda d: d.update(rho_pixel=1.5),
        lambda d: d["layers"][1].update(name="conv1"),  # duplicate name
        lambda d: d["layers"][-1].update(act="relu"),
        lambda d: d["layers"][0].update(act="gelu"),
        lambda d: d["layers"][2].update(concat="nope"),
        lambda d: d["layers"][0].update(stride=2),  # strides do not cancel
        lambda d: d.update(layers=[]),
        lambda d: d.pop("name"),
    ):
        d = json.loads(json.dumps(base))
        mutate(d)
        out.append(json.dumps(d))
    return out


def test_spec_digest_matches_python(tmp_path):
    from hyperobf.spec import MaskNetSpec

    texts = _spec_variants()
    got = run_node([{"op": "spec", "texts": texts}], tmp_path)[0]
    for t, g in zip(texts, got):
        spec = MaskNetSpec.from_dict(json.loads(t))
        assert g == {"json": spec.to_json(), "digest": spec.digest()}, t[:200]
    bad = _invalid_specs()
    got = run_node([{"op": "spec", "texts": bad}], tmp_path)[0]
    for t, g in zip(bad, got):
        with pytest.raises((TypeError, ValueError, KeyError)):
            MaskNetSpec.from_dict(json.loads(t))
        assert "error" in g, (t, g)


def _records() -> list:
    from hyperobf import protection

    e = functools.partial(protection.entry, protocol="query", data="glint24", queries=281, identities=24, command="x")
    recs: list = [None, {"version": 1, "updated": "2026-01-01T00:00:00Z", "preset": None, "entries": []}]
    one = protection.merge(None, [e("mobilefacenet", acc_clean=1.0, acc_protected=0.911, dssim_mean=0.0072,
                                    dssim_max=0.015)])
    recs.append(one)
    ties = protection.merge(one, [e("dlib", acc_clean=0.125, acc_protected=0.375, dssim_mean=0.00125,
                                    dssim_max=0.00375)])
    recs.append(ties)
    recs.append(protection.merge(ties, [e("resnet18", acc_clean=0.48, acc_protected=0.44, dssim_mean=0.012,
                                          dssim_max=0.02, preset="mid")], preset="mid"))
    recs.append(protection.merge(None, [e("arcface", acc_clean=1, acc_protected=0.2, dssim_mean=0.01, dssim_max=0.02,
                                          preset="low")]))
    for r in recs[2:]:
        for i, x in enumerate(r["entries"]):
            x["date"] = f"2026-0{1 + i}-1{i}T00:00:00Z"
    return recs


def test_protection_lines_match_python(tmp_path):
    import inspect

    from hyperobf import protection

    recs = _records()
    texts = [json.dumps(r) for r in recs]
    presets = [None]
    if "preset" in inspect.signature(protection.status_line).parameters:
        presets += ["mid", "low", "high", "max"]
    for preset in presets:
        got = run_node([{"op": "status", "texts": texts, "preset": preset}], tmp_path)[0]
        kw = {} if preset is None else {"preset": preset}
        want = [{"status": protection.status_line(r, **kw), "warning": protection.warning_line(r, **kw)} for r in recs]
        assert got == want


def test_model_checks_match_python(tmp_path):
    from hyperobf.device_runtime import load_model
    from hyperobf.device_runtime.model import ModelError
    from hyperobf.protection import status_line

    good = {"dyn": build_model(tmp_path / "dyn.onnx"), "fixed": build_model(tmp_path / "fixed.onnx", "fixed"),
            "D": build_model(tmp_path / "D.onnx", structure="D")}
    bad = tampered_models(tmp_path)
    got = run_node([{"op": "inspect", "paths": [str(p) for p in [*good.values(), *bad.values()]]}], tmp_path)[0]
    for (name, p), g in zip(good.items(), got):
        m = load_model(p, threads=1)
        assert "error" not in g, g
        assert g["digest"] == m.spec.digest() and g["spec"] == m.spec.to_json()
        assert g["fixedSize"] == m.fixed_size and g["modelId"] == m.model_id
        assert g["status"] == status_line(m.protection)
    for (name, p), g in zip(bad.items(), got[len(good):]):
        with pytest.raises(ModelError) as e:
            load_model(p, threads=1)
        assert "error" in g, name
        if name in ("digest", "json", "version", "record", "plain", "spec"):  # the metadata checks: same words
            assert g["error"] == str(e.value), name


@pytest.mark.slow  # > 5 s on 2 shared cores (pytest --durations)
def test_resize_matches_pillow_exactly(tmp_path):
    """The page's working image is Pillow's: reduce + antialiased bilinear, fixed point, Pillow 13's pass order."""
    rng = np.random.default_rng(2)
    cases = [(4000, 3000, 256, 192), (3000, 4000, 192, 256), (4001, 3003, 256, 192), (1001, 777, 192, 149),
             (640, 480, 256, 192), (300, 200, 192, 128), (200, 2000, 20, 200), (97, 61, 13, 9), (120, 146, 84, 56),
             (26, 117, 5, 46), (50, 40, 120, 90), (33, 17, 400, 301), (192, 250, 192, 250)]
    jobs, refs = [], []
    for i, (sw, sh, dw, dh) in enumerate(cases):
        a = image_array(rng, sh, sw)
        gap = None if (dw >= sw and dh >= sh) else 3.0
        jobs.append({"op": "resize", "src": raw_file(tmp_path, f"src{i}.u8", a), "sw": sw, "sh": sh, "ch": 3, "dw": dw, "dh": dh, "gap": gap,
                     "out": str(tmp_path / f"out{i}.u8")})
        refs.append(np.asarray(Image.fromarray(a).resize((dw, dh), Image.BILINEAR, reducing_gap=gap)))
    run_node(jobs, tmp_path)
    for job, ref in zip(jobs, refs):
        out = np.frombuffer(Path(job["out"]).read_bytes(), np.uint8).reshape(ref.shape)
        diff = np.abs(out.astype(int) - ref)
        assert diff.max() == 0, (job["sw"], job["sh"], job["dw"], job["dh"], int(diff.max()), int((diff > 0).sum()))


def test_delta_add_matches_python_exactly(tmp_path):
    """whole.add_upsampled: the uint8-code path (ρ 0.03) and the float path (ρ 0.25), bit for bit."""
    from hyperobf.device_runtime.whole import add_upsampled

    rng = np.random.default_rng(3)
    jobs, refs = [], []
    for i, (w, h, dw, dh, rho) in enumerate([(800, 600, 256, 192, 0.03), (801, 603, 256, 193, 0.03),
                                              (640, 480, 256, 192, 0.25), (256, 192, 256, 192, 0.03)]):
        img = image_array(rng, h, w)
        d = (np.tanh(rng.normal(0, 1, (dh, dw, 3))) * rho).astype(np.float32)
        jobs.append({"op": "add_upsampled", "img": raw_file(tmp_path, f"img{i}.u8", img),
                     "delta": raw_file(tmp_path, f"d{i}.f32", d),
                     "w": w, "h": h, "dw": dw, "dh": dh, "out": str(tmp_path / f"o{i}.u8")})
        refs.append(np.asarray(add_upsampled(Image.fromarray(img), d)))
    run_node(jobs, tmp_path)
    for job, ref in zip(jobs, refs):
        out = np.frombuffer(Path(job["out"]).read_bytes(), np.uint8).reshape(ref.shape)
        assert np.array_equal(out, ref), (job["w"], int(np.abs(out.astype(int) - ref).max()))


def test_dssim_readout_matches_kornia(tmp_path):
    pytest.importorskip("kornia")
    import torch

    from hyperobf.train.losses import dssim

    rng = np.random.default_rng(4)
    a = image_array(rng, 150, 200)
    b = np.clip(a.astype(int) + rng.integers(-6, 7, a.shape), 0, 255).astype(np.uint8)
    got = run_node([{"op": "ssim", "a": raw_file(tmp_path, "a.u8", a), "b": raw_file(tmp_path, "b.u8", b), "w": 200, "h": 150,
                     "window": 112}], tmp_path)[0]
    ta = torch.from_numpy(a.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    tb = torch.from_numpy(b.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    want = float(dssim(ta, tb)[0])
    assert abs(got["dssim"] - want) < 2e-5 * max(1.0, want / 0.01), (got, want)
    from kornia.metrics import ssim as kssim

    per_px = ((1 - kssim(ta, tb, 11, max_val=1.0).mean(1)) / 2)[0].double().numpy()  # (h, w)
    ii = np.pad(per_px.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    box = ii[112:, 112:] - ii[:-112, 112:] - ii[112:, :-112] + ii[:-112, :-112]
    assert abs(got["dssimWindow"] - box.max() / 112**2) < 2e-5


def test_budget_rule_matches_python(tmp_path):
    """fit_budget_windows (hyperobf protect's default in whole mode): the same scale, δ' within 1/255."""
    from hyperobf.device_runtime.budget import fit_budget_windows
    from hyperobf.presets import PRESETS

    assert run_node([{"op": "presets"}], tmp_path)[0] == {p.name: p.rho for p in PRESETS.values()}
    rng = np.random.default_rng(6)
    jobs, refs = [], []
    for i, (w, h, rho, rho_pixel, amp) in enumerate([(250, 192, 0.012, 0.03, 0.03), (256, 192, 0.007, 0.03, 0.02),
                                                     (192, 256, 0.017, 0.25, 0.2), (120, 100, 0.012, 0.03, 0.001)]):
        rgb = image_array(rng, h, w)
        d = (np.tanh(rng.normal(0, 1.5, (h, w, 3))) * amp).astype(np.float32)
        jobs.append({"op": "budget", "rgb": raw_file(tmp_path, f"rgb{i}.u8", rgb),
                     "delta": raw_file(tmp_path, f"d{i}.f32", d), "w": w,
                     "h": h, "rho": rho, "rho_pixel": rho_pixel, "window": 112, "out": str(tmp_path / f"o{i}.f32")})
        x = (rgb.astype(np.float32) * np.float32(1 / 255)).transpose(2, 0, 1)[None]
        fitted, s, dw = fit_budget_windows(x, d.transpose(2, 0, 1)[None], rho, rho_pixel, 112)
        refs.append(((fitted - x)[0].transpose(1, 2, 0), float(s[0]), float(dw[0])))
    got = run_node(jobs, tmp_path)
    scales = []
    for job, g, (ref, s, dw) in zip(jobs, got, refs):
        out = np.frombuffer(Path(job["out"]).read_bytes(), np.float32).reshape(ref.shape)
        scales.append((g["scale"], s))
        assert abs(g["scale"] - s) <= 2.0 ** -12, (g, s)
        assert np.abs(out - ref).max() <= 1 / 255 + 1e-6
        assert abs(g["dssim"] - dw) < 1e-5
    assert any(s < 1 for _, s in scales) and any(s == 1 for _, s in scales)  # the rule bit, and once it did not
