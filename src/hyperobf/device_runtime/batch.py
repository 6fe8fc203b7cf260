"""Protect files: one photo (read, protect, write with cleaned metadata) and batches of them.

A batch never stops on a bad file: each file ends as protected, skipped (already protected,
output exists, or no face with ``no_face="skip"``) or failed, with a one-line message.
``WriteOptions.overwrite`` replaces existing outputs (atomically); inputs are never written to.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .detect import FaceDetector
from .files import (DEFAULT_MAX_PIXELS, IMAGE_FORMATS, InputError, OutputExists, collect_inputs,
                    is_protected_name, open_image, output_path, save_atomic)
from .exif import save_params
from .model import MaskNetModel
from .pixels import to_rgb
from .protect import ProtectOptions, protect_rgb

PROTECTED, SKIPPED, FAILED = "protected", "skipped", "failed"


@dataclass
class FileResult:
    src: Path
    dst: Path | None
    status: str  # protected | skipped | failed
    message: str = ""  # one line: why skipped / failed (the file is named by ``label``)
    mode: str = ""  # face | whole
    faces: int = 0
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, decode..encode
    label: str = ""  # src as shown to the user: relative to the folder it was found under, else as given
    dst_label: str = ""  # dst relative to the output root (--out, else that folder), else as built
    dssim: list[float] = field(default_factory=list)  # measured on the written pixels (Protection.dssim)
    scales: list[float] = field(default_factory=list)  # the scale the DSSIM budget applied (Protection.scales)
    budget_dssim: list[float] = field(default_factory=list)  # what the budget rule measured (Protection.budget_dssim)

    def __post_init__(self) -> None:
        self.label = self.label or str(self.src)
        self.dst_label = self.dst_label or (str(self.dst) if self.dst is not None else "")


@dataclass(frozen=True)
class WriteOptions:
    out_dir: Path | None = None  # None: beside each input
    fmt: str | None = None  # png | jpg | webp; None: the input's own (PNG/JPEG for others)
    quality: int = 95  # JPEG / WebP
    keep_metadata: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    overwrite: bool = False  # replace existing outputs (atomic rename); inputs are still never written

    def __post_init__(self) -> None:
        if self.fmt is not None and self.fmt.lower() not in IMAGE_FORMATS:
            raise ValueError(f"unknown output format {self.fmt!r}; choose png, jpg or webp")
        if not 1 <= self.quality <= 100:
            raise ValueError("quality must be within 1..100")


def protect_file(src: Path, dst: Path, model: MaskNetModel, detector: FaceDetector | None = None,
                 options: ProtectOptions | None = None, write: WriteOptions | None = None) -> FileResult:
    """Protect one file into ``dst``; never raises for a bad input (the result says failed)."""
    write = write or WriteOptions()
    timings: dict[str, float] = {}
    try:
        t = time.perf_counter()
        loaded = open_image(src, write.max_pixels)
        px = to_rgb(loaded.image)
        timings["decode"] = time.perf_counter() - t
        res = protect_rgb(px, model, detector, options)
        timings.update(res.timings)
        notes = list(res.notes)
        if loaded.frames > 1:
            notes.insert(0, f"animated ({loaded.frames} frames): only the first frame is protected, written as a still")
        if res.image is None:
            return FileResult(src, None, SKIPPED, "no face found", res.mode, 0, notes, timings)
        t = time.perf_counter()
        fmt = IMAGE_FORMATS[dst.suffix.lstrip(".").lower()]
        params = save_params(fmt, loaded.exif, loaded.info, px.icc_profile, write.keep_metadata)
        save_atomic(res.image, dst, write.quality, overwrite=write.overwrite, **params)
        timings["encode"] = time.perf_counter() - t
        return FileResult(src, dst, PROTECTED, "", res.mode, res.faces, notes, timings,
                          dssim=res.dssim, scales=res.scales, budget_dssim=res.budget_dssim)
    except OutputExists:
        return FileResult(src, dst, SKIPPED, "output exists, not overwritten (--overwrite replaces it)")
    except InputError as e:
        return FileResult(src, None, FAILED, e.reason)
    except MemoryError:
        return FileResult(src, None, FAILED, "out of memory")
    except Exception as e:  # a batch carries on: any other failure is reported on one line
        first = str(e).splitlines()[0] if str(e) else ""
        return FileResult(src, None, FAILED, f"{type(e).__name__}: {first}".rstrip(": "))


def protect_files(paths: Iterable[str | Path], model: MaskNetModel, *, detector: FaceDetector | None = None,
                  options: ProtectOptions | None = None, write: WriteOptions | None = None, recursive: bool = False,
                  on_start: Callable[[int], None] | None = None,
                  on_result: Callable[[FileResult], None] | None = None) -> list[FileResult]:
    """Protect files and folders (``recursive``: sub-folders too) -> one result per input file.

    Outputs go beside each input, or into ``write.out_dir`` mirroring the sub-folders of a
    given folder. Inputs named ``*_protected.*`` are skipped, and so are existing outputs unless
    ``write.overwrite``; two inputs with one output name (a.jpg, a.png -> a_protected.png):
    the second is skipped. ``on_start(n_files)`` and ``on_result(result)`` drive a progress display.
    """
    write = write or WriteOptions()
    items = collect_inputs([Path(p) for p in paths], recursive)
    if on_start:
        on_start(len(items))
    results = []
    written: dict[Path, str] = {}  # outputs of this batch -> the input that made them
    fmt = write.fmt.lower() if write.fmt else None
    for src, root in items:
        dst = output_path(src, write.out_dir, fmt, root)
        key = Path(os.path.abspath(dst))
        if is_protected_name(src):
            r = FileResult(src, None, SKIPPED, "already protected")
        elif key in written:
            r = FileResult(src, dst, SKIPPED, f"same output as {written[key]}, not overwritten")
        elif src.exists() and src.resolve() == dst.resolve():  # unreachable by naming; a last guard
            r = FileResult(src, None, FAILED, "output would overwrite the input")
        elif (dst.exists() or dst.is_symlink()) and not write.overwrite:
            r = FileResult(src, dst, SKIPPED, "output exists, not overwritten (--overwrite replaces it)")
        else:
            r = protect_file(src, dst, model, detector, options, write)
        r.label = _shown(src, root)
        if r.dst is not None:
            r.dst_label = _shown(r.dst, write.out_dir or root)
        if r.status == PROTECTED:
            written[key] = r.label
        results.append(r)
        if on_result:
            on_result(r)
    return results


def _shown(path: Path, base: Path | None) -> str:
    """``path`` relative to ``base`` when it lies under it, else as built."""
    if base is not None:
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)


def summary(results: list[FileResult]) -> str:
    n = {s: sum(r.status == s for r in results) for s in (PROTECTED, SKIPPED, FAILED)}
    return f"protected {n[PROTECTED]}, skipped {n[SKIPPED]}, failed {n[FAILED]}"
