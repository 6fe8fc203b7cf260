"""The table of export formats: one row per format drives the exporter, the CLI's choices
and the runtime's recognition of model files (by suffix).

Pure data (no torch/onnx/coremltools imports): the device runtime imports SUFFIXES.
The exporter and verifier of a row are named as ``"module:attribute"`` strings and
resolved lazily by :mod:`hyperobf.export.registry`, so importing this table stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "int8")
SHAPES = ("fixed", "dynamic")


@dataclass(frozen=True)
class FormatRow:
    name: str
    suffix: str  # file (or package folder) suffix; precision variants insert ".fp16"/".int8" before it
    description: str
    runtime_loadable: bool  # can the onnxruntime device runtime run it?
    precisions: tuple[str, ...] = ("fp32",)
    exporter: str = ""  # "module:Class" of the per-spec template (render / render_batch)
    verifier: str = ""  # "module:function" checking rendered users against the torch reference
    is_directory: bool = False  # a package folder (CoreML .mlpackage) rather than one file

    def file_name(self, stem: str, precision: str) -> str:
        """``user0001.onnx`` for fp32, ``user0001.fp16.onnx`` for other precisions."""
        infix = "" if precision == "fp32" else f".{precision}"
        return f"{stem}{infix}{self.suffix}"


FORMATS: dict[str, FormatRow] = {
    "onnx": FormatRow(
        "onnx", ".onnx", "ONNX, self-contained, opset 17 (fixed 1x3x112x112 or dynamic NxHxW)", True,
        PRECISIONS, "hyperobf.export.onnx_export:OnnxTemplate", "hyperobf.export.verify:verify_onnxruntime"),
    "ort": FormatRow(
        "ort", ".ort", "ORT format for onnxruntime mobile (basic optimisations, EP independent)", True,
        PRECISIONS, "hyperobf.export.ort_export:OrtTemplate", "hyperobf.export.verify:verify_onnxruntime"),
    "coreml": FormatRow(
        "coreml", ".mlpackage", "CoreML mlprogram package, iOS15 deployment target", False,
        ("fp32", "fp16"), "hyperobf.export.coreml_export:CoreMLTemplate", "hyperobf.export.coreml_verify:verify_coreml",
        is_directory=True),
}

SUFFIXES = {row.suffix: row.name for row in FORMATS.values()}


def format_of(filename: str) -> FormatRow | None:
    """The row whose suffix ends ``filename`` (case-insensitive), or None."""
    low = filename.lower()
    for row in FORMATS.values():
        if low.endswith(row.suffix):
            return row
    return None


def parse_list(text: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    """``"onnx,ort"`` -> ["onnx", "ort"]: order kept, duplicates dropped; ValueError on unknown names."""
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"no {what} given; choose from {', '.join(allowed)}")
    bad = [t for t in items if t not in allowed]
    if bad:
        raise ValueError(f"unknown {what} {bad[0]!r}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))
