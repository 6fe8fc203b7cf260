"""The table of export formats: one row per format drives the exporter, the CLI's choices
and the runtime's recognition of model files (by suffix)."""

from __future__ import annotations

from dataclasses import dataclass

# Pure data here (no torch/onnx imports): the device runtime reads SUFFIXES.


@dataclass(frozen=True)
class FormatRow:
    name: str
    suffix: str
    description: str
    runtime_loadable: bool  # can the onnxruntime device runtime run it?


FORMATS: dict[str, FormatRow] = {
    "onnx": FormatRow("onnx", ".onnx", "ONNX, self-contained, opset 17", True),
}

SUFFIXES = {row.suffix: row.name for row in FORMATS.values()}
