"""Safe file handling for the runtime: find inputs, name outputs, read and write atomically.

Inputs are never overwritten: outputs are ``<name>_protected.<ext>``, written to a temp file
in the destination folder and renamed into place only when complete.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

SUFFIX = "_protected"
READABLE = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}


class InputError(ValueError):
    """An input image we cannot protect (one-line reason)."""


def collect_inputs(paths: list[Path], recursive: bool = False) -> list[Path]:
    """Files given directly, plus image files inside given folders (sorted)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            out += sorted(f for f in it if f.is_file() and f.suffix.lower() in READABLE)
        else:
            out.append(p)
    return out


def is_protected_name(path: Path) -> bool:
    return path.stem.endswith(SUFFIX)


def output_path(src: Path, out_dir: Path | None, fmt: str | None) -> Path:
    ext = (fmt or src.suffix.lstrip(".").lower() or "png")
    if ext not in FORMATS:
        ext = "png"  # inputs such as .bmp/.tif/.gif are written as PNG
    return (out_dir or src.parent) / f"{src.stem}{SUFFIX}.{ext}"


def open_image(path: Path) -> Image.Image:
    """Open, fully decode and orientation-correct an image; InputError with a one-line reason."""
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path.name}: empty file")
        with Image.open(path) as im:
            n_frames = getattr(im, "n_frames", 1)
            im.seek(0)  # animated images: the first frame is protected (said in the summary)
            im.load()
            img = ImageOps.exif_transpose(im)
            img.info.setdefault("n_frames", n_frames)
            return img
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Image.DecompressionBombError:
        raise InputError(f"{path.name}: image too large (decompression-bomb limit)") from None
    except UnidentifiedImageError:
        raise InputError(f"{path.name}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path.name}: unreadable or truncated image ({e})") from None


def save_atomic(img: Image.Image, dst: Path, quality: int = 95, **params) -> None:
    """Encode to a temp file beside ``dst``, then rename; nothing partial is ever left."""
    fmt = FORMATS[dst.suffix.lstrip(".").lower()]
    if fmt == "JPEG":
        img = img.convert("RGB")  # JPEG has no alpha
        params.setdefault("quality", quality)
    elif fmt == "WEBP":
        params.setdefault("quality", quality)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format=fmt, **params)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
