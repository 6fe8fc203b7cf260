"""CoreML (mlprogram ``.mlpackage``) templates of per-user MaskNets.

Converted once per (spec, shape, precision) with coremltools from a traced torch MaskNet
holding sentinel weights. An .mlpackage is a folder::

    Manifest.json
    Data/com.apple.CoreML/model.mlmodel          program + metadata; tensors < 10 elements inline
    Data/com.apple.CoreML/weights/weight.bin     64-byte header, then per tensor a 64-byte record
                                                 and 64-byte-aligned data

Per user the weight bytes are spliced into weight.bin and model.mlmodel (and the model id
into model.mlmodel's user-defined metadata); the format table's checker reads a spliced
package back with coremltools (:func:`hyperobf.export.coreml_verify.check_template`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import __version__
from ..model_meta import INPUT_NAME, OUTPUT_NAMES, PREFIX
from ..spec import MaskNetSpec
from .precision import encode
from .splice import ByteTemplate, SplicedTemplate, placeholder_id, sentinels

DEPLOYMENT_TARGET = "iOS15"  # mlprogram needs iOS15 / macOS12; fp32 inputs/outputs on this target
MAX_SIDE = 4096  # flexible-shape bound of the dynamic variant
PACKAGE_FILES = ("Manifest.json", "Data/com.apple.CoreML/model.mlmodel", "Data/com.apple.CoreML/weights/weight.bin")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence coremltools' import warnings (no libcoremlpython on Linux) and progress bars."""
    loggers = [logging.getLogger(n) for n in ("coremltools", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def const_name(param: str, precision: str) -> str:
    """coremltools' name for a traced parameter: net.conv1.weight -> net_conv1_weight[_to_fp16]."""
    return "net_" + param.replace(".", "_") + ("_to_fp16" if precision == "fp16" else "")


def convert(spec: MaskNetSpec, params: dict[str, np.ndarray], shape: str, precision: str,
            metadata: dict[str, str], dst: Path) -> None:
    """Trace the torch MaskNet with ``params`` and save it as an mlprogram package at ``dst``."""
    import torch

    from ..models.masknet import MaskNet

    net = MaskNet.from_numpy(spec, params)
    with quiet():
        import coremltools as ct

        class Wrapper(torch.nn.Module):  # two named outputs, as in the ONNX graph
            def __init__(self, net: MaskNet) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                d = self.net.delta(x)
                return (x + d).clamp(0.0, 1.0), d

        s = spec.input_size
        traced = torch.jit.trace(Wrapper(net).eval(), torch.rand(1, spec.in_channels, s, s), check_trace=False)
        if shape == "fixed":
            dims: tuple = (1, spec.in_channels, s, s)
        else:
            m = spec.stride_product
            dims = (ct.RangeDim(1, 64, default=1), spec.in_channels,
                    ct.RangeDim(m, MAX_SIDE, default=s), ct.RangeDim(m, MAX_SIDE, default=s))
        model = ct.convert(
            traced, inputs=[ct.TensorType(name=INPUT_NAME, shape=dims)],
            outputs=[ct.TensorType(name=n) for n in OUTPUT_NAMES], convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS15,
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32)
        for k, v in metadata.items():
            model.user_defined_metadata[k] = v
        model.author = "HyperObf Privacy Service Provider"
        model.version = __version__
        model.license = "per-user model; do not share"
        model.short_description = (f"HyperObf per-user face-cloaking MaskNet (structure {spec.name}, {precision}, "
                                   f"{shape} input, {DEPLOYMENT_TARGET}): image in [0,1] RGB NCHW -> protected, delta")
        model.save(str(dst))


class CoreMLTemplate(SplicedTemplate):
    """A spec's .mlpackage with per-user weights spliced into weight.bin and model.mlmodel."""

    format = "coreml"
    title = "CoreML"
    seeds = range(20, 28, 2)

    def __init__(self, spec: MaskNetSpec, shape: str, metadata: dict[str, str], precision: str = "fp32") -> None:
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"CoreML export supports fp32 and fp16, not {precision}")
        super().__init__(spec, shape, {**metadata, PREFIX + "deployment_target": f'"{DEPLOYMENT_TARGET}"'}, precision)

    def sentinel_shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        # float32 parameters, converted by coremltools itself (fp16: its own rounding, which is then located)
        return {s.name: (s.shape, np.dtype(np.float32)) for s in self.slots}

    def _build(self, seed: int) -> None:
        values = sentinels(self.sentinel_shapes(), seed)
        stored = encode(self.spec, self.precision, {k: v[None] for k, v in values.items()})
        pid = placeholder_id(seed)
        with tempfile.TemporaryDirectory(prefix="hyperobf-coreml-") as tmp:
            pkg = Path(tmp) / "t.mlpackage"
            convert(self.spec, values, self.shape, self.precision, {**self.metadata, PREFIX + "model_id": f'"{pid}"'}, pkg)
            found = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file())
            if found != sorted(PACKAGE_FILES):
                raise RuntimeError(f"unexpected .mlpackage layout from coremltools: {found}")
            blobs = {rel: (pkg / rel).read_bytes() for rel in PACKAGE_FILES}
        # Each tensor lives in exactly one of the two files: weight.bin, or inline in model.mlmodel.
        where: dict[str, dict[str, bytes]] = {rel: {} for rel in PACKAGE_FILES}
        for name, arr in stored.items():
            needle = arr[0].tobytes()
            hits = [rel for rel in PACKAGE_FILES[1:] if blobs[rel].find(needle) >= 0]
            if len(hits) != 1:
                raise LookupError(f"{name} found in {len(hits)} package files")
            where[hits[0]][name] = needle
        self.files = {rel: ByteTemplate.from_sentinels(blobs[rel], where[rel], pid if rel.endswith("model.mlmodel") else None)
                      for rel in PACKAGE_FILES}
        self.template_blobs = blobs
