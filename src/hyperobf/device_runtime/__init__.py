"""On-device runtime: onnxruntime + numpy + Pillow only (never torch).

    from PIL import Image
    from hyperobf.device_runtime import load_model, load_detector, protect_image, protect_files

    model = load_model("user0001.onnx")                     # checks metadata and signature
    detector = load_detector("scrfd_2.5g_bnkps.onnx")       # optional: face-region mode
    protected = protect_image(Image.open("me.jpg"), model, detector=detector)
    results = protect_files(["photos/"], model, detector=detector, recursive=True)
"""

from .batch import FileResult, WriteOptions, protect_file, protect_files, summary
from .detect import DetectorError, Face, FaceDetector
from .files import InputError
from .model import MaskNetModel, ModelError, load_model
from .protect import NoFaceError, ProtectOptions, Protection, protect, protect_array, protect_image
from .session import SessionConfig


def load_detector(path, threads: int = 0, providers: tuple[str, ...] = ("cpu",), **kw) -> FaceDetector:
    """An SCRFD-style ONNX face detector (5 keypoints) for face-region mode."""
    return FaceDetector(path, SessionConfig(threads=threads, providers=tuple(providers)), **kw)


__all__ = ["DetectorError", "Face", "FaceDetector", "FileResult", "InputError", "MaskNetModel", "ModelError",
           "NoFaceError", "ProtectOptions", "Protection", "SessionConfig", "WriteOptions", "load_detector",
           "load_model", "protect", "protect_array", "protect_file", "protect_files", "protect_image", "summary"]
