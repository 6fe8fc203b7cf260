"""Resolve the format table's ``"module:attribute"`` exporter and verifier names (lazy imports:
torch, onnxruntime and coremltools load only for the formats actually exported)."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from ..spec import MaskNetSpec
from .formats import FORMATS, FormatRow


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_template(fmt: str | FormatRow, spec: MaskNetSpec, shape: str, metadata: dict[str, str], precision: str):
    """The per-spec template of a format (has .encode, .render_batch, .precision, .spec)."""
    row = FORMATS[fmt] if isinstance(fmt, str) else fmt
    if precision not in row.precisions:
        raise ValueError(f"{row.name} export does not support {precision} (supported: {', '.join(row.precisions)})")
    return _resolve(row.exporter)(spec, shape, metadata, precision)


def verifier(fmt: str | FormatRow) -> Callable:
    """verifier(template, paths, params, inputs, label) -> report dict; raises ExportError subclasses."""
    row = FORMATS[fmt] if isinstance(fmt, str) else fmt
    return _resolve(row.verifier)
