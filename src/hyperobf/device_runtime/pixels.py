"""Pixel formats: any Pillow mode -> 8-bit RGB for the MaskNet (plus alpha to re-attach),
and the ICC profile that still describes the converted pixels.

* RGB / RGBX / YCbCr / L / 1 / P: converted to RGB (P with transparency keeps it as alpha).
* RGBA / LA / PA / RGBa / La: alpha is split off and re-attached to the protected result.
* I;16 / I / F (16-bit or float grey): scaled to 8 bits (the output is 8-bit).
* CMYK: converted through its embedded ICC profile to sRGB when it has one (an sRGB profile
  is then written with the output), otherwise with Pillow's naive formula.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


@dataclass
class Pixels:
    rgb: Image.Image  # mode "RGB"
    alpha: Image.Image | None  # mode "L", same size, or None
    icc_profile: bytes | None  # profile of ``rgb`` (None: assume sRGB)
    note: str = ""  # what conversion happened, for the user ("" when none worth saying)


def icc_color_space(icc: bytes | None) -> str:
    """The data colour space of an ICC profile ('RGB ', 'GRAY', 'CMYK', ...) from its header."""
    return icc[16:20].decode("latin-1") if icc and len(icc) >= 20 else ""


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float grey -> 8-bit L, scaling by the type's range."""
    a = np.asarray(img)
    if img.mode == "F":
        top = 1.0 if np.nanmax(a, initial=0.0) <= 1.0 else 255.0
        a8 = np.clip(np.nan_to_num(a) / top * 255.0 + 0.5, 0, 255)
    else:
        # 16-bit PNG/TIFF greys open as I;16 or I: values up to 65535.
        top = 255 if img.mode == "I" and a.max(initial=0) <= 255 else 65535
        a8 = np.clip(a.astype(np.float32) * (255.0 / top) + 0.5, 0, 255)
    return Image.fromarray(a8.astype(np.uint8), "L")


def to_rgb(img: Image.Image) -> Pixels:
    """Split any Pillow image into 8-bit RGB, optional alpha and the RGB pixels' ICC profile."""
    icc = img.info.get("icc_profile") or None
    mode = img.mode
    if mode == "RGB":
        return Pixels(img, None, icc if icc_color_space(icc) == "RGB " else None)
    if mode in ("RGBa", "La"):
        img = img.convert("RGBA" if mode == "RGBa" else "LA")  # un-premultiply first
        mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    alpha = img.getchannel("A") if mode in ALPHA_MODES else None
    note = ""
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        rgb = _high_bit_depth_to_l(img).convert("RGB")
        note = f"{mode} converted to 8-bit"
        icc = None
    elif mode == "CMYK":
        if icc_color_space(icc) == "CMYK":
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))  # type: ignore[arg-type]
            rgb = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            assert rgb is not None
            icc, note = _srgb_profile(), "CMYK converted to sRGB through its ICC profile"
        else:
            rgb, icc, note = img.convert("RGB"), None, "CMYK without ICC profile converted naively"
    elif mode in ("LA", "L", "1"):
        rgb = img.convert("L").convert("RGB")
        icc = None  # a grey profile does not describe RGB pixels
    elif mode == "PA":
        rgb = img.convert("RGBA").convert("RGB")
    else:
        rgb = img.convert("RGB")  # RGBA, RGBX, YCbCr, ...
    if icc is not None and icc_color_space(icc) != "RGB ":
        icc = None
    return Pixels(rgb, alpha, icc, note)


def reattach(out: Image.Image, px: Pixels) -> Image.Image:
    """The protected RGB image, with the original alpha re-attached when there was one."""
    if px.alpha is not None:
        out.putalpha(px.alpha)
    return out
