"""What metadata a protected photo carries.

Default (privacy): EXIF is rebuilt from an allow-list of harmless camera settings (make, model,
capture time, exposure); everything else is dropped — GPS, serial numbers, owner/artist/
copyright, descriptions and comments, unique ids, maker notes, XMP, IPTC, PNG text. The ICC
profile is kept (it describes the pixels). The orientation tag is dropped: the pixels are
already upright (EXIF orientation is applied on reading).

``keep=True`` (``--keep-metadata``) keeps all EXIF and XMP, except the orientation tag, the
EXIF thumbnail and maker notes — both may hold an *unprotected* preview of the photo. IPTC is
never written (Pillow cannot write it).
"""

from __future__ import annotations

import re

from PIL import Image, PngImagePlugin
from PIL.ExifTags import IFD

ORIENTATION = 0x0112
MAKER_NOTE = 0x927C
POINTERS = {int(IFD.Exif), int(IFD.GPSInfo), int(IFD.Interop), int(IFD.IFD1)}

# Allow-lists (tag ids) for the default, privacy-preserving EXIF.
KEEP_IFD0 = {
    0x010F,  # Make
    0x0110,  # Model
    0x0132,  # DateTime
    0x011A, 0x011B, 0x0128,  # XResolution, YResolution, ResolutionUnit
}
KEEP_EXIF = {
    0x9000,  # ExifVersion
    0x9003, 0x9004, 0x9010, 0x9011, 0x9012,  # DateTimeOriginal/Digitized, OffsetTime*
    0x829A, 0x829D, 0x8822, 0x8827,  # ExposureTime, FNumber, ExposureProgram, ISO
    0x9201, 0x9202, 0x9203, 0x9204, 0x9205,  # Shutter, Aperture, Brightness, ExposureBias, MaxAperture
    0x9207, 0x9208, 0x9209, 0x920A,  # MeteringMode, LightSource, Flash, FocalLength
    0xA001,  # ColorSpace
    0xA402, 0xA403, 0xA404, 0xA405, 0xA406,  # ExposureMode, WhiteBalance, DigitalZoom, FocalLength35, SceneType
    0xA408, 0xA409, 0xA40A,  # Contrast, Saturation, Sharpness
    0xA433, 0xA434,  # LensMake, LensModel (never the lens serial 0xA435)
}

_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="[^"]*"|>[^<]*</tiff:Orientation>)')


def clean_exif(src: Image.Exif | None, keep: bool = False) -> bytes | None:
    """EXIF bytes for the protected photo (see module doc), or None when nothing is left."""
    if not src:
        return None
    out = Image.Exif()
    for tag, val in src.items():
        if tag in POINTERS or tag == ORIENTATION:
            continue
        if keep or tag in KEEP_IFD0:
            out[tag] = val
    exif_ifd = {t: v for t, v in src.get_ifd(IFD.Exif).items()
                if t != MAKER_NOTE and t not in POINTERS and (keep or t in KEEP_EXIF)}
    if exif_ifd:
        out.get_ifd(IFD.Exif).update(exif_ifd)
    if keep:
        gps = dict(src.get_ifd(IFD.GPSInfo))
        if gps:
            out.get_ifd(IFD.GPSInfo).update(gps)
    if not out and not exif_ifd:
        return None
    return out.tobytes()


def _xmp_bytes(info: dict) -> bytes | None:
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if not xmp:
        return None
    data = xmp.encode() if isinstance(xmp, str) else bytes(xmp)
    return _XMP_ORIENTATION.sub(b"", data)  # pixels are upright: an orientation here would rotate them again


def save_params(fmt: str, exif: Image.Exif | None, info: dict, icc_profile: bytes | None,
                keep: bool = False) -> dict:
    """Metadata keyword arguments for ``Image.save`` in ``fmt`` (JPEG / PNG / WEBP)."""
    params: dict = {}
    if icc_profile:
        params["icc_profile"] = icc_profile
    exif_bytes = clean_exif(exif, keep)
    if exif_bytes:
        params["exif"] = exif_bytes
    xmp = _xmp_bytes(info) if keep else None
    if xmp:
        if fmt == "PNG":
            png = PngImagePlugin.PngInfo()
            png.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
            params["pnginfo"] = png
        else:
            params["xmp"] = xmp
    return params
