"""On-device runtime: onnxruntime + numpy + Pillow only (never torch).

    from hyperobf.device_runtime import load_model, protect_image
    model = load_model("user0001.onnx")
    protected = protect_image(Image.open("me.jpg"), model)
"""

from .model import MaskNetModel, ModelError, load_model
from .protect import protect_array, protect_image

__all__ = ["MaskNetModel", "ModelError", "load_model", "protect_array", "protect_image"]
