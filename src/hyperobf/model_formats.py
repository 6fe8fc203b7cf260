"""The table of model formats: the only place where ONNX, ORT and CoreML differ.

One row per format drives the exporter (its template, its template check, its file verifier),
the CLI's choices, the PSP's offer and the device runtime's recognition of model files (by
suffix). Pure data: no torch/onnx/coremltools imports, so the device runtime imports it beside
:mod:`hyperobf.spec` and :mod:`hyperobf.model_meta`. The code a row names is given as
``"module:attribute"`` strings, resolved lazily by :mod:`hyperobf.export.registry` (importing
this table stays cheap, and a format's heavy libraries load only when it is exported).
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
    exporter: str = ""  # "module:Class" of the per-spec template (encode / render / render_batch)
    checker: str = ""  # "module:function(template)": the template reproduces its format's own serializer
    verifier: str = ""  # "module:function" checking rendered users' files against the torch reference
    template_verifier: str = ""  # "module:function(template, shape) -> report fields", once per verified export
    is_directory: bool = False  # a package folder (CoreML .mlpackage) rather than one file

    def file_name(self, stem: str, precision: str) -> str:
        """``user0001.onnx`` for fp32, ``user0001.fp16.onnx`` for other precisions."""
        infix = "" if precision == "fp32" else f".{precision}"
        return f"{stem}{infix}{self.suffix}"


_EXPORT = "hyperobf.export."
FORMATS: dict[str, FormatRow] = {
    "onnx": FormatRow(
        "onnx", ".onnx", "ONNX, self-contained, opset 17 (fixed 1x3x112x112 or dynamic NxHxW)", True, PRECISIONS,
        exporter=_EXPORT + "onnx_export:OnnxTemplate", checker=_EXPORT + "onnx_export:check_template",
        verifier=_EXPORT + "verify:verify_onnx_files", template_verifier=_EXPORT + "mobile_check:verify_onnx_template"),
    "ort": FormatRow(
        "ort", ".ort", "ORT format for onnxruntime mobile (basic optimisations, EP independent)", True, PRECISIONS,
        exporter=_EXPORT + "ort_export:OrtTemplate", checker=_EXPORT + "ort_export:check_template",
        verifier=_EXPORT + "verify:verify_ort_files"),
    "coreml": FormatRow(
        "coreml", ".mlpackage", "CoreML mlprogram package, iOS15 deployment target", False, ("fp32", "fp16"),
        exporter=_EXPORT + "coreml_export:CoreMLTemplate", checker=_EXPORT + "coreml_verify:check_template",
        verifier=_EXPORT + "coreml_verify:verify_coreml", is_directory=True),
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
