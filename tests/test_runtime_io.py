"""Device runtime, file side: pixel modes, orientation, alpha, metadata stripping, output
formats and naming (API and `hyperobf protect`)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms
from PIL.ExifTags import IFD
from typer.testing import CliRunner

from hyperobf.cli import app
from hyperobf.device_runtime import WriteOptions, load_model, protect, protect_files
from hyperobf.device_runtime.pixels import icc_color_space, to_rgb
from runtime_support import encode, noise_image

runner = CliRunner()
BOUND = round(0.03 * 255) + 1  # |δ| in grey levels for ρ_pixel = 0.03, plus rounding


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def cmyk_icc() -> bytes:
    """A minimal ICC v2 CMYK printer profile (A2B0 lut16, 2-point grid, naive CMYK->RGB in XYZ D50)."""
    srgb_d50 = np.array([[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169],
                         [0.0139322, 0.0971045, 0.7141733]])
    clut = []
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    rgb = np.array([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)])
                    clut += [round(v * 32768) for v in srgb_d50 @ rgb]  # u1Fixed15 XYZ
    ramp = [0, 65535]
    lut = (b"mft2" + bytes(4) + bytes([4, 3, 2, 0]) + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
           + struct.pack(">HH", 2, 2) + struct.pack(">8H", *ramp * 4) + struct.pack(f">{len(clut)}H", *clut)
           + struct.pack(">6H", *ramp * 3))
    text = b"test CMYK\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8) + bytes(3) + bytes(67)
    wtpt = b"XYZ " + bytes(4) + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"A2B0", lut)]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = 128 + 4 + len(table) + len(data)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"prtrCMYKXYZ " + bytes(12)
              + b"acsp" + bytes(24) + struct.pack(">I", 0) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _mode_images() -> dict[str, Image.Image]:
    rgb = Image.fromarray(noise_image(48, 64, seed=3))
    a = Image.fromarray((np.arange(48 * 64).reshape(48, 64) % 256).astype(np.uint8))
    i16 = Image.fromarray((np.random.default_rng(1).random((48, 64)) * 65535).astype(np.uint16))
    assert i16.mode == "I;16"
    p_t = rgb.quantize(16)
    p_t.info["transparency"] = 0
    rgba = rgb.copy()
    rgba.putalpha(a)
    la = rgb.convert("L")
    la.putalpha(a)
    return {"RGB": rgb, "L": rgb.convert("L"), "1": rgb.convert("1"), "P": rgb.quantize(16), "P+transparency": p_t,
            "RGBA": rgba, "LA": la, "CMYK": rgb.convert("CMYK"), "I;16": i16}


@pytest.mark.parametrize("name", ["RGB", "L", "1", "P", "P+transparency", "RGBA", "LA", "CMYK", "I;16"])
def test_every_mode_is_protected_with_alpha_kept(name, models):
    img = _mode_images()[name]
    res = protect(img, load_model(models["dynamic"]))
    out = res.image
    assert out.size == img.size
    has_alpha = name in ("RGBA", "LA", "P+transparency")
    assert out.mode == ("RGBA" if has_alpha else "RGB")
    if has_alpha:
        assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(img.convert("RGBA").getchannel("A")))
    ref = np.asarray(to_rgb(img).rgb).astype(int)
    diff = np.abs(np.asarray(out.convert("RGB")).astype(int) - ref)
    assert diff.max() <= BOUND and diff.mean() > 0


def test_sixteen_bit_scaled_not_clipped():
    i16 = _mode_images()["I;16"]
    px = to_rgb(i16)
    want = np.asarray(i16).astype(np.float64) / 257.0
    assert np.abs(np.asarray(px.rgb)[..., 0] - want).max() <= 0.51 and "8-bit" in px.note


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_with_icc_goes_through_the_profile(tmp_path, models, fmt):
    corners = np.array([[[0, 0, 0, 0], [0, 255, 255, 0]], [[255, 0, 255, 0], [0, 0, 0, 255]]], np.uint8)
    img = Image.fromarray(np.kron(corners, np.ones((16, 16, 1), np.uint8)), "CMYK")  # 32×32, four flat quadrants
    src = tmp_path / f"cmyk.{'tif' if fmt == 'TIFF' else 'jpg'}"
    img.save(src, format=fmt, icc_profile=cmyk_icc(), **({"quality": 100} if fmt == "JPEG" else {}))
    px = to_rgb(Image.open(src))
    assert "ICC" in px.note and icc_color_space(px.icc_profile) == "RGB "
    rgb = np.asarray(px.rgb).astype(int)
    white, red, green, black = rgb[8, 8], rgb[8, 24], rgb[24, 8], rgb[24, 24]
    assert white.min() > 230 and black.max() < 25
    assert red[0] > 200 and red[1:].max() < 60 and green[1] > 150 and green[[0, 2]].max() < 80
    [r] = protect_files([src], load_model(models["dynamic"]), write=WriteOptions(fmt="png"))
    assert r.status == "protected", r.message
    out = Image.open(r.dst)
    assert out.size == img.size and icc_color_space(out.info.get("icc_profile")) == "RGB "


def test_exif_orientation_is_applied_and_dropped(tmp_path, models):
    arr = np.zeros((40, 60, 3), np.uint8)  # stored 60 wide, 40 high; a red block top-left
    arr[:10, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    src = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(src, quality=100, exif=exif.tobytes())
    [r] = protect_files([src], load_model(models["dynamic"]))
    out = Image.open(r.dst)
    assert out.size == (40, 60)  # upright: 40 wide, 60 high
    px = np.asarray(out).astype(int)
    assert px[:8, -8:, 0].mean() > 200 and px[-8:, :8, 0].mean() < 60  # top-left went to top-right
    assert 0x0112 not in out.getexif()


def _tagged_photo(path, fmt: str) -> None:
    exif = Image.Exif()
    exif.update({0x010F: "Canon", 0x0110: "EOS 5D", 0x013B: "Alice Owner", 0x8298: "(c) Alice", 0x010E: "Alice at home",
                 0x0112: 1})
    sub = exif.get_ifd(IFD.Exif)
    sub.update({0xA431: "SERIAL123", 0xA430: "Alice", 0xA435: "LENS999", 0x927C: b"MAKERNOTE-PREVIEW",
                0x9286: b"ASCII\0\0\0hello", 0xA420: "UNIQUEID", 0x829A: 0.004, 0x9003: "2024:05:01 10:00:00"})
    exif.get_ifd(IFD.GPSInfo).update({1: "N", 2: (52.0, 0.0, 1.5), 3: "E", 4: (4.0, 21.0, 0.0)})
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description Iptc4xmpExt:PersonInShot="Alice"/></x:xmpmeta>'
    kw = {"xmp": xmp} if fmt != "PNG" else {}
    Image.fromarray(noise_image(40, 50, seed=9)).save(path, format=fmt, exif=exif.tobytes(), icc_profile=SRGB, **kw)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_metadata_stripped_by_default_icc_kept(tmp_path, models, ext):
    fmt = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
    src = tmp_path / f"tagged.{ext}"
    _tagged_photo(src, fmt)
    [r] = protect_files([src], load_model(models["dynamic"]))
    out = Image.open(r.dst)
    ex = out.getexif()
    assert ex.get(0x010F) == "Canon" and ex.get(0x0110) == "EOS 5D"
    for tag in (0x013B, 0x8298, 0x010E, 0x0112):
        assert tag not in ex
    sub = ex.get_ifd(IFD.Exif)
    assert sub.get(0x9003) == "2024:05:01 10:00:00" and 0x829A in sub
    for tag in (0xA431, 0xA430, 0xA435, 0x927C, 0x9286, 0xA420):
        assert tag not in sub
    assert not ex.get_ifd(IFD.GPSInfo)
    raw = r.dst.read_bytes()
    for secret in (b"SERIAL123", b"Alice", b"LENS999", b"MAKERNOTE", b"PersonInShot"):
        assert secret not in raw
    assert out.info.get("icc_profile") == SRGB


def test_keep_metadata_keeps_exif_but_not_previews(tmp_path, models):
    src = tmp_path / "tagged.jpg"
    _tagged_photo(src, "JPEG")
    r = runner.invoke(app, ["protect", str(src), "-m", str(models["dynamic"]), "--keep-metadata"])
    assert r.exit_code == 0, r.output
    out = Image.open(tmp_path / "tagged_protected.jpg")
    ex = out.getexif()
    assert ex.get(0x013B) == "Alice Owner" and ex.get_ifd(IFD.Exif).get(0xA431) == "SERIAL123"
    assert ex.get_ifd(IFD.GPSInfo).get(1) == "N"
    assert 0x927C not in ex.get_ifd(IFD.Exif) and 0x0112 not in ex  # maker notes can hold previews; pixels upright
    assert b"PersonInShot" in out.info.get("xmp", b"")


def test_output_naming_formats_and_folders(tmp_path, models):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(noise_image(30, 40)).save(src / "a.jpg")
    Image.fromarray(noise_image(31, 41)).save(src / "sub" / "b.png")
    Image.fromarray(noise_image(32, 42)).save(src / "sub" / "c.bmp")
    Image.fromarray(noise_image(20, 20)).save(src / "sub" / ".hidden.png")
    (src / "notes.txt").write_text("not an image")
    m = str(models["dynamic"])
    r = runner.invoke(app, ["protect", str(src), "-m", m])  # not recursive: only a.jpg
    assert r.exit_code == 0 and "protected 1, skipped 0, failed 0" in r.output, r.output
    assert (src / "a_protected.jpg").exists() and not (src / "sub" / "b_protected.png").exists()
    out = tmp_path / "out"
    r = runner.invoke(app, ["protect", str(src), "-m", m, "-r", "-o", str(out), "--format", "webp", "--quality", "80"])
    assert r.exit_code == 0 and "protected 3, skipped 1, failed 0" in r.output, r.output  # a_protected.jpg skipped
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "a_protected.webp", "sub", "sub/b_protected.webp", "sub/c_protected.webp"]
    assert Image.open(out / "sub" / "c_protected.webp").size == (42, 32)
    r = runner.invoke(app, ["protect", str(src / "sub"), "-m", m])
    assert (src / "sub" / "c_protected.png").exists() and (src / "sub" / "b_protected.png").exists()
    assert not (src / "sub" / ".hidden_protected.png").exists()
    r = runner.invoke(app, ["protect", str(src), "-m", m, "--format", "tiff"])
    assert r.exit_code == 1 and "unknown output format" in r.output


def test_jpeg_quality_option(tmp_path, models):
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "x.png")
    sizes = {}
    for q in (30, 95):
        d = tmp_path / f"q{q}"
        r = runner.invoke(app, ["protect", str(tmp_path / "x.png"), "-m", str(models["dynamic"]), "-o", str(d),
                                "--format", "jpg", "--quality", str(q)])
        assert r.exit_code == 0, r.output
        sizes[q] = (d / "x_protected.jpg").stat().st_size
    assert sizes[30] < 0.6 * sizes[95]


def test_heic_input(tmp_path, models):
    pytest.importorskip("pillow_heif")
    from hyperobf.device_runtime.files import register_plugins

    assert register_plugins()
    src = tmp_path / "phone.heic"
    src.write_bytes(encode(Image.fromarray(noise_image(48, 64, seed=4)), "HEIF", quality=90))
    [r] = protect_files([src], load_model(models["dynamic"]))
    assert r.status == "protected", r.message
    assert r.dst.name == "phone_protected.jpg" and Image.open(r.dst).size == (64, 48)
    assert Image.open(io.BytesIO(src.read_bytes())).size == (64, 48)  # input untouched and still readable
