"""Safe file handling for the runtime: find inputs, name outputs, read and write atomically.

Reading: anything Pillow opens (HEIC/HEIF too when the optional ``pillow-heif`` is installed),
fully decoded, EXIF orientation applied. Images above ``max_pixels`` (default: Pillow's
decompression-bomb threshold, 89.5 MP) are refused from their header alone, before any pixel
is decoded — this also covers decompression bombs and absurd sizes such as 20000×20000.
Animated images (GIF, WebP, APNG, multi-page TIFF): the first frame is protected and written
as a still image, and the caller is told so.

Writing: outputs are ``<name>_protected.<ext>``, encoded to a hidden temp file in the
destination folder and then hard-linked into place, which fails rather than overwrite a file
that appeared meanwhile (with ``overwrite``: renamed over it, an atomic replace); inputs are
never written to. The temp file gets the mode a plain ``open()`` would give the output: 0666
less the umask, or an overwritten file's own mode (``mkstemp`` alone would leave it 0600).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..fsmodes import default_file_mode

SUFFIX = "_protected"
READABLE = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif"}
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
# Inputs whose own format we do not write: photos -> JPEG, graphics -> PNG.
FALLBACK_EXT = {".heic": "jpg", ".heif": "jpg", ".avif": "jpg"}
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

_limit_lock = threading.Lock()
_plugins_registered = False


class InputError(ValueError):
    """An input image we cannot protect: ``str()`` is "name: reason", ``reason`` the one-line reason alone."""

    def __init__(self, name: str, reason: str | None = None) -> None:
        super().__init__(name if reason is None else f"{name}: {reason}")
        self.reason = name if reason is None else reason


class OutputExists(FileExistsError):
    """The output file exists already and overwriting was not asked for."""


@dataclass
class Loaded:
    """A decoded, upright image and what is needed to write its metadata back."""

    image: Image.Image
    exif: Image.Exif | None
    info: dict = field(default_factory=dict)  # the decoder's info (icc_profile, xmp, ...)
    frames: int = 1
    format: str = ""


def register_plugins() -> bool:
    """Register optional Pillow plugins (HEIC/HEIF via pillow-heif); True when HEIF is readable."""
    global _plugins_registered
    if not _plugins_registered:
        _plugins_registered = True
        try:
            from pillow_heif import register_heif_opener  # type: ignore[import-not-found]

            register_heif_opener()
        except ImportError:
            return False
    return "HEIF" in Image.OPEN


def collect_inputs(paths: list[Path], recursive: bool = False) -> list[tuple[Path, Path | None]]:
    """(file, folder it was found under or None) for files given directly and image files inside
    given folders (sorted; hidden files skipped). Missing paths are kept, to fail one by one."""
    out: list[tuple[Path, Path | None]] = []
    for p in paths:
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            files = sorted(f for f in it if f.is_file() and f.suffix.lower() in READABLE
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            out += [(f, p) for f in files]
        else:
            out.append((p, None))
    return out


def is_protected_name(path: Path) -> bool:
    return path.stem.endswith(SUFFIX)


def output_path(src: Path, out_dir: Path | None, fmt: str | None, root: Path | None = None) -> Path:
    """``<stem>_protected.<ext>`` beside ``src`` or in ``out_dir`` (mirroring sub-folders of ``root``)."""
    ext = (fmt or src.suffix.lstrip(".")).lower()
    if ext not in IMAGE_FORMATS:
        ext = FALLBACK_EXT.get(src.suffix.lower(), "png")  # .bmp/.tif/.gif/... are written as PNG
    folder = src.parent
    if out_dir is not None:
        folder = out_dir / src.parent.relative_to(root) if root is not None else out_dir
    return folder / f"{src.stem}{SUFFIX}.{ext}"


@contextlib.contextmanager
def _header_only_open():
    """Pillow's own bomb check off while ``Image.open`` reads the header: our check right after
    it reports the size and honours ``max_pixels``. Decoding happens later, after that check."""
    with _limit_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _too_large(name: str, w: int, h: int, max_pixels: int) -> InputError:
    return InputError(name, f"image too large ({w}×{h} = {w * h / 1e6:.0f} MP; the limit is "
                      f"{max_pixels / 1e6:.1f} MP, raise it with --max-pixels)")


def open_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Loaded:
    """Open, size-check, fully decode and orientation-correct an image; InputError with a one-line reason."""
    register_plugins()
    with warnings.catch_warnings():
        # Decoders warn (multi-line) about odd but readable files; the result or the InputError says enough.
        warnings.simplefilter("ignore")
        return _open_image(path, max_pixels)


def _open_image(path: Path, max_pixels: int) -> Loaded:
    try:
        if path.is_dir():
            raise InputError(str(path), "is a folder")
        if path.stat().st_size == 0:
            raise InputError(path.name, "empty file")
        with _header_only_open():
            im = Image.open(path)  # reads the header only
        with im:
            w, h = im.size
            if w * h > max_pixels:  # header only: nothing decoded yet
                raise _too_large(path.name, w, h, max_pixels)
            if w < 1 or h < 1:
                raise InputError(path.name, f"image has no pixels ({w}×{h})")
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                im.seek(0)
            im.load()
            exif = im.getexif()
            info = dict(im.info)
            upright = ImageOps.exif_transpose(im)
            fmt = im.format or ""
        return Loaded(upright, exif, info, frames, fmt)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(str(path), "no such file") from None
    except Image.DecompressionBombError:
        raise InputError(path.name, f"image too large (over {max_pixels / 1e6:.1f} MP, a possible "
                         f"decompression bomb; raise the limit with --max-pixels)") from None
    except UnidentifiedImageError:
        raise InputError(path.name, "not an image Pillow can read") from None
    except MemoryError:
        raise InputError(path.name, "out of memory while decoding") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as e:
        # Pillow's decoders raise all of these on corrupt data.
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(path.name, f"unreadable or truncated image ({first})") from None


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite on white rather than expose whatever colour transparent pixels hold."""
    if img.mode in ("RGBA", "LA"):
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img.convert("RGBA"), mask=img.getchannel("A"))
        return bg
    return img.convert("RGB")


def _output_mode(dst: Path, overwrite: bool) -> int:
    """What ``open(dst, "wb")`` would leave: an existing file keeps its mode, a new one gets 0o666 & ~umask."""
    if overwrite:
        try:
            return dst.stat().st_mode & 0o7777
        except OSError:
            pass
    return default_file_mode()


def _publish(tmp: Path, dst: Path, overwrite: bool = False) -> None:
    """Move a finished temp file to ``dst``: never replacing an existing file, or (``overwrite``) atomically."""
    if overwrite:
        os.replace(tmp, dst)  # atomic: readers see the old file or the new one, never a partial one
        return
    try:
        os.link(tmp, dst)  # atomic, and fails if dst exists
    except FileExistsError:
        raise OutputExists(f"{dst}: exists, not overwritten") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.EACCES):
            raise
        if dst.exists():  # filesystems without hard links (FAT, some network shares)
            raise OutputExists(f"{dst}: exists, not overwritten") from None
        os.replace(tmp, dst)
        return
    tmp.unlink()


def save_atomic(img: Image.Image, dst: Path, quality: int = 95, overwrite: bool = False, **params) -> None:
    """Encode to a temp file beside ``dst``, then publish; nothing partial is ever left behind.

    ``overwrite``: an existing ``dst`` is replaced atomically (OutputExists otherwise).
    """
    fmt = IMAGE_FORMATS[dst.suffix.lstrip(".").lower()]
    if fmt == "JPEG":
        img = _flatten_alpha(img)
        params.setdefault("quality", quality)
    elif fmt == "WEBP":
        params.setdefault("quality", quality)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_dir():
        raise InputError(str(dst), "output path is a folder")
    if dst.exists() and not overwrite:
        raise OutputExists(f"{dst}: exists, not overwritten")
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _output_mode(dst, overwrite))
        with os.fdopen(fd, "wb") as f:
            img.save(f, format=fmt, **params)
        _publish(tmp, dst, overwrite)
    finally:
        tmp.unlink(missing_ok=True)
