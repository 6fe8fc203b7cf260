"""Frozen pretrained face embedders for the embedding attacker (issue 6, attacker b).

* ``mobilefacenet`` — the ONNX MobileFaceNet run with onnxruntime (no gradients needed to attack).
  The shipped graph has a fixed batch of 1 and a ``Reshape(x, [1, -1])``; we rewrite, in memory
  only, the batch dimension to a symbolic one and the reshape target to ``[0, -1]`` so faces run
  in batches (checked equal to the batch-1 graph in tests).
* ``dlib`` — dlib's face-recognition ResNet ported to torch (:mod:`.dlib_resnet`).

Both expose ``embed(x: (N, 3, 112, 112) in [0, 1]) -> (N, 128)`` unit vectors (torch, CPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F


class Embedder(Protocol):
    name: str

    def embed(self, x: torch.Tensor) -> torch.Tensor: ...


def batched_onnx_bytes(path: str | Path) -> bytes:
    """The model with a symbolic batch dimension (see module docstring)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type != "Constant" or not node.attribute or not node.attribute[0].HasField("t"):
            continue
        val = numpy_helper.to_array(node.attribute[0].t)
        used_as_shape = any(n.op_type == "Reshape" and n.input[1] == node.output[0] for n in model.graph.node)
        if used_as_shape and val.ndim == 1 and len(val) >= 1 and val[0] == 1:
            val = val.copy()
            val[0] = 0  # 0 = copy the input's batch dimension
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(val.astype(np.int64)))
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    return model.SerializeToString()


class OnnxEmbedder:
    """An ArcFace-style ONNX embedder: input (x*255 - 127.5) / 128, output L2-normalised."""

    def __init__(self, path: str | Path, name: str = "mobilefacenet", threads: int = 0, batch: int = 128) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"face embedder not found: {path}")
        from ..device_runtime.session import SessionConfig, session_options

        so = session_options(SessionConfig(threads=threads))
        self.session = ort.InferenceSession(batched_onnx_bytes(path), so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.name, self.batch = name, batch

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch].detach().float().cpu().numpy()
            out.append(self.session.run(None, {self.input_name: (chunk * 255.0 - 127.5) / 128.0})[0])
        e = torch.from_numpy(np.concatenate(out)) if out else torch.zeros(0, 128)
        return F.normalize(e.float(), dim=1)


class DlibEmbedder:
    def __init__(self, folder: str | Path, device: str | torch.device = "cpu", batch: int = 128) -> None:
        from .dlib_resnet import load_dlib_resnet

        self.net = load_dlib_resnet(folder).to(device)
        self.device, self.batch, self.name = torch.device(device), batch, "dlib"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = [self.net.embed(x[i:i + self.batch].to(self.device).float()).cpu() for i in range(0, len(x), self.batch)]
        return torch.cat(out) if out else torch.zeros(0, 128)


def load_embedders(models_root: str | Path | None, names: tuple[str, ...], device: str | torch.device = "cpu",
                   threads: int = 0) -> list:
    """The requested embedders found under models_root; missing files are skipped (the report says so)."""
    if not models_root:
        return []
    root = Path(models_root)
    out: list = []
    for name in names:
        if name == "mobilefacenet" and (root / "mobilefacenet.onnx").is_file():
            out.append(OnnxEmbedder(root / "mobilefacenet.onnx", threads=threads))
        elif name == "dlib" and (root / "dlib_resnet_faceapi").is_dir():
            out.append(DlibEmbedder(root / "dlib_resnet_faceapi", device))
    return out
