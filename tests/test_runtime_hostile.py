"""Device runtime under hostile inputs: truncated, empty, non-image, decompression bomb,
1×1, 20000×20000, animated, already protected, failing writes — plus a property-based test
over image bytes, sizes and modes. Each bad file: one-line error, nothing partial written,
inputs untouched, the batch carries on."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from hyperobf.device_runtime import load_model, protect_file, protect_files
from hyperobf.device_runtime.files import OutputExists, save_atomic
from runtime_support import astronaut, bomb_png, encode, header_only_png, no_temp_files, noise_image, snapshot


def _animated(fmt: str) -> bytes:
    frames = [Image.fromarray(noise_image(24, 32, seed=s)) for s in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    jpeg = encode(astronaut(), "JPEG", quality=90)
    files = {
        "good.jpg": jpeg,
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "zero.png": b"",
        "notimage.png": b"this is a text file, not a PNG" * 10,
        "bomb.png": bomb_png(),
        "huge.png": header_only_png(20000, 20000),
        "one.png": encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
        "anim.gif": _animated("GIF"),
        "anim.webp": _animated("WEBP"),
        "old_protected.png": encode(Image.fromarray(noise_image(8, 8)), "PNG"),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def test_hostile_batch_via_real_command(hostile_dir, models, tmp_path):
    before = snapshot(hostile_dir)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "hyperobf.cli", "protect", str(hostile_dir), "-m", str(models["fixed"]),
                        "-o", str(out)], capture_output=True, text=True, timeout=300)
    text = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in text, text
    assert "protected 4, skipped 1, failed 5" in r.stdout, text
    errors = [l for l in text.splitlines() if l.startswith("error:")]
    assert len(errors) == 5
    expect = {"truncated.jpg": "truncated", "zero.png": "empty file", "notimage.png": "not an image",
              "bomb.png": "image too large", "huge.png": "image too large"}
    for name, msg in expect.items():
        assert any(name in l and msg in l for l in errors), (name, errors)
    assert "20000×20000" in text  # refused from the header, before decoding (the file holds no pixels)
    assert any("anim.gif" in l and "only the first frame" in l for l in text.splitlines())
    assert sorted(p.name for p in out.iterdir()) == ["anim_protected.png", "anim_protected.webp", "good_protected.jpg",
                                                     "one_protected.png"]
    assert Image.open(out / "one_protected.png").size == (1, 1)
    for name in ("anim_protected.png", "anim_protected.webp"):
        im = Image.open(out / name)
        assert im.size == (32, 24) and getattr(im, "n_frames", 1) == 1
    assert Image.open(out / "good_protected.jpg").size == (512, 512)
    assert snapshot(hostile_dir) == before  # inputs untouched: bytes and mtimes
    assert no_temp_files(out) and no_temp_files(hostile_dir)


def test_pixel_cap_option(tmp_path, models):
    from typer.testing import CliRunner

    from hyperobf.cli import app

    Image.fromarray(noise_image(100, 100)).save(tmp_path / "x.png")
    r = CliRunner().invoke(app, ["protect", str(tmp_path / "x.png"), "-m", str(models["dynamic"]), "--max-pixels", "5000"])
    assert r.exit_code == 1 and "image too large (100×100" in r.output and "--max-pixels" in r.output
    assert not (tmp_path / "x_protected.png").exists()


def test_failed_encode_leaves_nothing(tmp_path, models, monkeypatch):
    src = tmp_path / "a.png"
    Image.fromarray(noise_image(40, 40)).save(src)
    before = src.read_bytes()

    def broken_save(self, fp, *a, **k):
        fp.write(b"partial data")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    r = protect_file(src, tmp_path / "a_protected.png", load_model(models["dynamic"]))
    assert r.status == "failed" and "disk full" in r.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"] and src.read_bytes() == before


def test_existing_output_never_overwritten(tmp_path, models):
    dst = tmp_path / "a_protected.png"
    dst.write_bytes(b"keep me")
    with pytest.raises(OutputExists):
        save_atomic(Image.new("RGB", (4, 4)), dst)
    assert dst.read_bytes() == b"keep me" and no_temp_files(tmp_path)
    src = tmp_path / "a.png"
    Image.fromarray(noise_image(10, 10)).save(src)
    [r] = protect_files([src], load_model(models["dynamic"]))
    assert r.status == "skipped" and "exists" in r.message and dst.read_bytes() == b"keep me"


# --- property-based: arbitrary bytes / sizes / modes never crash, never write partial files ----------

MODES = ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1"]
FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


def _make(mode: str, w: int, h: int, seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = Image.fromarray((rng.random((h, w)) * 65535).astype(np.uint16))
    else:
        img = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).convert(mode)
    try:
        return encode(img, fmt)
    except (OSError, ValueError, KeyError):  # this format cannot store this mode: store RGB
        return encode(img.convert("RGB"), fmt)


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    kind = draw(st.sampled_from(["valid", "truncated", "corrupted", "random"]))
    if kind == "random":
        return FORMATS[fmt], draw(st.binary(max_size=300))
    data = _make(draw(st.sampled_from(MODES)), draw(st.integers(1, 40)), draw(st.integers(1, 40)),
                 draw(st.integers(0, 2**16)), fmt)
    if kind == "truncated":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif kind == "corrupted":
        buf = bytearray(data)
        for pos, val in draw(st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255)), min_size=1, max_size=8)):
            buf[pos] = val
        data = bytes(buf)
    return FORMATS[fmt], data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(case=image_files())
def test_property_any_bytes_never_crash(case, models):
    ext, data = case
    model = load_model(models["fixed"])
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        src = d / f"in.{ext}"
        src.write_bytes(data)
        mtime = src.stat().st_mtime_ns
        [r] = protect_files([src], model)  # never raises
        event(r.status)
        assert src.read_bytes() == data and src.stat().st_mtime_ns == mtime
        assert no_temp_files(d)
        if r.status == "protected":
            with Image.open(src) as im:
                from PIL import ImageOps

                want = ImageOps.exif_transpose(im).size
            assert Image.open(r.dst).size == want
        else:
            assert r.status == "failed" and r.message and "\n" not in r.message
            assert sorted(p.name for p in d.iterdir()) == [src.name]
