"""`hyperobf protect` as a user meets it (issue 14): output file modes, --overwrite, per-file lines
named relative to the input folder on one stream with the summary, unknown providers refused."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from hyperobf.cli import app
from hyperobf.device_runtime import load_model, protect_files
from hyperobf.device_runtime.batch import WriteOptions
from runtime_support import no_temp_files, noise_image


def _photos(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    Image.fromarray(noise_image(40, 48, seed=1)).save(root / "a.png")
    Image.fromarray(noise_image(40, 48, seed=2)).save(root / "sub" / "b.jpg", quality=95)
    return root


@pytest.fixture
def umask():
    """Set the process umask for one test, restore it after."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_outputs_get_the_mode_plain_open_gives(tmp_path, models, umask, mask):
    src = _photos(tmp_path / "in")
    umask(mask)
    plain = tmp_path / "plain"
    with open(plain, "wb"):
        pass
    results = protect_files([src], load_model(models["dynamic"]), recursive=True)
    assert [r.status for r in results] == ["protected", "protected"]
    for r in results:
        assert stat.S_IMODE(r.dst.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~mask


def test_overwrite_replaces_outputs_atomically_and_never_touches_inputs(tmp_path, models, umask):
    umask(0o022)
    src = _photos(tmp_path / "in")
    old_a, old_b = src / "a_protected.png", src / "sub" / "b_protected.jpg"
    old_a.write_bytes(b"made by last month's net")
    old_b.write_bytes(b"made by last month's net")
    os.chmod(old_a, 0o640)  # replacing keeps the file's own mode, as open() on an existing file would
    inputs = {p: p.read_bytes() for p in (src / "a.png", src / "sub" / "b.jpg")}

    r = CliRunner().invoke(app, ["protect", str(src), "-r", "-m", str(models["dynamic"])])
    assert r.exit_code == 0, r.output
    assert "skipped: a.png: output exists, not overwritten (--overwrite replaces it)" in r.stdout
    assert old_a.read_bytes() == b"made by last month's net"

    r = CliRunner().invoke(app, ["protect", str(src), "-r", "-m", str(models["dynamic"]), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "protected 2, skipped 2, failed 0" in r.stdout  # the two old outputs are inputs named *_protected
    for out in (old_a, old_b):
        assert Image.open(out).size == (48, 40)  # a real protected image now
    assert stat.S_IMODE(old_a.stat().st_mode) == 0o640 and stat.S_IMODE(old_b.stat().st_mode) == 0o644
    assert {p: p.read_bytes() for p in inputs} == inputs
    assert no_temp_files(src) and no_temp_files(src / "sub")


def test_failed_overwrite_keeps_the_old_output(tmp_path, models, monkeypatch):
    src = tmp_path / "a.png"
    Image.fromarray(noise_image(20, 20)).save(src)
    old = tmp_path / "a_protected.png"
    old.write_bytes(b"previous output")

    def broken_save(self, fp, *a, **k):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    [r] = protect_files([src], load_model(models["dynamic"]), write=WriteOptions(overwrite=True))
    assert r.status == "failed" and "disk full" in r.message
    assert old.read_bytes() == b"previous output" and no_temp_files(tmp_path)


def test_overwrite_never_lets_two_inputs_of_one_batch_replace_each_other(tmp_path, models):
    Image.fromarray(noise_image(20, 20, seed=1)).save(tmp_path / "a.png")
    Image.fromarray(noise_image(20, 20, seed=2)).save(tmp_path / "a.webp")
    results = protect_files([tmp_path], load_model(models["dynamic"]),
                            write=WriteOptions(fmt="png", overwrite=True))
    assert [(r.label, r.status) for r in results] == [("a.png", "protected"), ("a.webp", "skipped")]
    assert results[1].message == "same output as a.png, not overwritten"


def test_per_file_lines_relative_to_the_input_root_on_stdout(tmp_path, models):
    src = _photos(tmp_path / "in")
    (src / "sub" / "bad.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(noise_image(8, 8)).convert("P").save(src / "sub" / "anim.gif", save_all=True,
                                                          append_images=[Image.new("P", (8, 8))])
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["protect", str(src), "-r", "-m", str(models["dynamic"]), "-o", str(out), "-v"])
    assert r.exit_code == 1
    budget, *lines = r.stdout.splitlines()
    assert budget.startswith("note: budget preset mid (DSSIM <= 0.012) on each aligned 112x112 face")
    whole = r"\(whole; DSSIM written/working 0\.\d{4}/0\.\d{4}( \(scaled to 0\.\d+\))?, worst face-sized window\)"
    assert re.match(r"protected: a\.png -> a_protected\.png  " + whole + "  decode ", lines[0]), lines[0]
    assert re.match(r"protected: sub/anim\.gif -> sub/anim_protected\.png  " + whole, lines[1]), lines[1]
    assert lines[2] == "note: sub/anim.gif: animated (2 frames): only the first frame is protected, written as a still"
    assert re.match(r"protected: sub/b\.jpg -> sub/b_protected\.jpg  " + whole, lines[3]), lines[3]
    assert lines[4] == "error: sub/bad.jpg: not an image Pillow can read"
    assert lines[5] == "protected 3, skipped 0, failed 1"
    assert "sub/" not in r.stderr and "protected" not in r.stderr  # nothing of the batch on another stream
    assert (out / "sub" / "b_protected.jpg").is_file()


def test_unknown_provider_is_refused_with_the_available_ones(tmp_path, models):
    Image.fromarray(noise_image(8, 8)).save(tmp_path / "a.png")
    r = CliRunner().invoke(app, ["protect", str(tmp_path / "a.png"), "-m", str(models["dynamic"]), "--provider", "foo"])
    assert r.exit_code == 1
    assert r.stderr.strip().startswith("error: unknown execution provider 'foo'; available here: cpu")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a_protected.png").exists()
