"""Protect pixels: compute δ at the MaskNet's working scale and map it back to the photo.

Two modes (see whole.py and face.py):

* ``face`` — a face detector finds faces; each is aligned to the 112² template, perturbed
  there, and δ is mapped back with a feathered mask. No face found: skip the photo or fall back
  to whole-photo mode (``no_face``).
* ``whole`` — the photo is resized so faces land near working scale (measured with the
  detector when one is given), δ is computed there, upsampled and added.

``auto`` picks ``face`` when a detector is given, else ``whole``.

The budget rule (budget.py, the evaluation's rule; ``ProtectOptions.budget``: a preset of
hyperobf.presets, a DSSIM ρ, or None): face mode scales each aligned 112² face's δ — after the
net and any refinement — until its 8-bit crop has DSSIM ≤ ρ; whole mode scales the working
image's δ until every 112² window does. Default: preset ``mid`` (README: "DSSIM budget").

    from hyperobf.device_runtime import load_model, load_detector, protect_image
    out = protect_image(Image.open("me.jpg"), load_model("user.onnx"), detector=load_detector("scrfd.onnx"))
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .align import face_to_template, scale_of
from .budget import DEFAULT_PRESET, BudgetedModel, resolve_budget
from .detect import Face, FaceDetector
from .face import FEATHER, face_dssim, protect_faces
from .model import MaskNetModel
from .pixels import Pixels, reattach, to_rgb
from .refine import RefinedModel
from .whole import DEFAULT_WORK_SIZE, MAX_WORK_PIXELS, whole_photo

MODES = ("auto", "face", "whole")
NO_FACE = ("whole", "skip")


class NoFaceError(ValueError):
    """Face mode found no face and was told to skip the photo."""


@dataclass(frozen=True)
class ProtectOptions:
    mode: str = "auto"  # auto | face | whole
    no_face: str = "whole"  # face mode with no face found: whole (fall back) | skip
    work_size: int | None = None  # whole mode without faces: shorter side at working scale
    max_work_pixels: int = MAX_WORK_PIXELS  # cap on the whole-mode working image
    feather: float = FEATHER  # face mode: mask fade at the crop edges, in 112² pixels
    # Hybrid refinement (refine.py): K gradient steps on each aligned face after the MaskNet (face mode only).
    refiner: object | None = field(default=None, compare=False, repr=False)  # a refine.Refiner
    refine_steps: int = 0
    # The budget rule: a preset name (hyperobf.presets), a DSSIM ρ in (0, 1], or None (no DSSIM budget).
    budget: str | float | None = DEFAULT_PRESET

    def __post_init__(self) -> None:
        resolve_budget(self.budget)  # ValueError (one line) for an unknown preset or a bad ρ
        if self.refine_steps < 0:
            raise ValueError("refine_steps must be >= 0")
        if self.refine_steps and self.refiner is None:
            raise ValueError("refinement steps need a refiner (--refiner)")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose {', '.join(MODES)}")
        if self.no_face not in NO_FACE:
            raise ValueError(f"unknown no-face policy {self.no_face!r}; choose {', '.join(NO_FACE)}")
        if self.work_size is not None and self.work_size < 8:
            raise ValueError("work_size must be at least 8 pixels")

    @property
    def rho(self) -> float | None:
        """The DSSIM budget ρ (None: no budget)."""
        return resolve_budget(self.budget)[0]

    @property
    def preset(self) -> str | None:
        """The preset whose budget applies (None: no budget, or a ρ that is no preset's)."""
        return resolve_budget(self.budget)[1]


@dataclass
class Protection:
    """What :func:`protect` did to one image."""

    image: Image.Image | None  # None when skipped (no face and no_face="skip")
    mode: str  # "face" | "whole" | "skipped"
    faces: int = 0
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    work_shape: tuple[int, int] | None = None  # whole mode: (h, w) at which δ was computed
    # Measured on the written pixels. face: per face, its aligned 112² crop vs the original's;
    # whole: one value, the largest DSSIM over the 112² windows of the photo brought back to working scale.
    dssim: list[float] = field(default_factory=list)
    # the scale the budget applied to δ (per face / one): < 1 scaled down, 1 = all, > 1 a net's fill (budget_fill)
    scales: list[float] = field(default_factory=list)
    # What the budget rule measured at the kept scale (empty without a budget). face: each 8-bit aligned
    # crop's DSSIM; whole: the 8-bit working image's worst window.
    budget_dssim: list[float] = field(default_factory=list)
    rho: float | None = None  # the DSSIM budget applied (None: none)


def _face_scale(faces: list[Face], size: int) -> float:
    """Median photo->aligned-crop scale over the faces (crop pixels per photo pixel)."""
    return statistics.median(scale_of(face_to_template(f.keypoints, size)) for f in faces)


def protect_rgb(px: Pixels, model: MaskNetModel, detector: FaceDetector | None = None,
                options: ProtectOptions | None = None) -> Protection:
    """Protect converted pixels (see pixels.to_rgb); the result keeps the alpha channel."""
    opt = options or ProtectOptions()
    mode = opt.mode if opt.mode != "auto" else ("face" if detector is not None else "whole")
    if mode == "face" and detector is None:
        raise ValueError("face mode needs a face detector (--detector)")
    img = px.rgb
    rho = opt.rho
    timings: dict[str, float] = {}
    notes: list[str] = [px.note] if px.note else []
    size = model.fixed_size or model.spec.input_size
    faces: list[Face] = []
    if detector is not None:
        t = time.perf_counter()
        faces = detector.detect(img)
        timings["detect"] = time.perf_counter() - t
    if mode == "face":
        if faces:
            refined = RefinedModel(model, opt.refiner, opt.refine_steps) if opt.refine_steps else None  # type: ignore[arg-type]
            net = refined or model
            budgeted = BudgetedModel(net, rho) if rho is not None else None
            out, tm = protect_faces(img, faces, budgeted or net, opt.feather)  # type: ignore[arg-type]
            timings.update(tm)
            if refined is not None:
                timings["refine"] = refined.seconds  # part of "perturb"
            if budgeted is not None:
                timings["budget"] = budgeted.seconds  # part of "perturb"
            t = time.perf_counter()
            measured = face_dssim(img, out, faces, size)
            timings["measure"] = time.perf_counter() - t
            scales = budgeted.scales if budgeted is not None else [1.0] * len(faces)
            at_crop = budgeted.dssim if budgeted is not None else []
            return Protection(reattach(out, px), "face", len(faces), notes, timings, dssim=measured, scales=scales,
                              budget_dssim=at_crop, rho=rho)
        if opt.no_face == "skip":
            return Protection(None, "skipped", 0, notes + ["no face found: skipped"], timings)
        notes.append("no face found: protected as a whole photo")
    if opt.refine_steps:
        notes.append("not refined: refinement runs on aligned faces (face mode) only")
    w, h = img.size
    if faces:
        scale = _face_scale(faces, size)
        notes.append(f"working scale {scale:.3g} from {len(faces)} face(s)")
    else:
        scale = (opt.work_size or DEFAULT_WORK_SIZE) / min(h, w)
    budget = (rho, float(model.spec.rho_pixel)) if rho is not None else None
    out, work, tm, (kept, at_work, measured) = whole_photo(img, model, scale, opt.max_work_pixels, budget)
    timings.update(tm)
    return Protection(reattach(out, px), "whole", len(faces), notes, timings, work, dssim=[measured], scales=[kept],
                      budget_dssim=[at_work] if at_work is not None else [], rho=rho)


def protect(img: Image.Image, model: MaskNetModel, detector: FaceDetector | None = None,
            options: ProtectOptions | None = None) -> Protection:
    """Protect a Pillow image of any mode; the result is RGB (RGBA when it had alpha), same size."""
    return protect_rgb(to_rgb(img), model, detector, options)


def protect_image(img: Image.Image, model: MaskNetModel, work_size: int | None = None, *,
                  detector: FaceDetector | None = None, options: ProtectOptions | None = None) -> Image.Image:
    """Protect a Pillow image -> protected Pillow image (same size; alpha kept).

    ``work_size`` is a shortcut for ``ProtectOptions(work_size=...)``. Raises NoFaceError when
    face mode finds no face and ``options.no_face == "skip"``.
    """
    if options is None:
        options = ProtectOptions(work_size=work_size)
    res = protect(img, model, detector, options)
    if res.image is None:
        raise NoFaceError("no face found")
    return res.image


def protect_array(rgb: np.ndarray, model: MaskNetModel, work_size: int | None = None, *,
                  detector: FaceDetector | None = None, options: ProtectOptions | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> protected (H, W, 3) uint8 RGB."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("expected an (H, W, 3) uint8 RGB array")
    return np.asarray(protect_image(Image.fromarray(rgb, "RGB"), model, work_size, detector=detector, options=options))
