"""Runs the format table's rows: resolves a row's ``"module:attribute"`` names (lazy imports:
torch, onnxruntime and coremltools load only for the formats actually exported) and applies
them, so no caller branches on a format's name."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from ..model_formats import FORMATS, FormatRow
from ..spec import MaskNetSpec


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _row(fmt: str | FormatRow) -> FormatRow:
    return FORMATS[fmt] if isinstance(fmt, str) else fmt


def make_template(fmt: str | FormatRow, spec: MaskNetSpec, shape: str, metadata: dict[str, str], precision: str):
    """The per-spec template of a format (has .encode, .render_batch, .precision, .spec), checked
    by the row's checker against the format's own serializer before it is handed out."""
    row = _row(fmt)
    if precision not in row.precisions:
        raise ValueError(f"{row.name} export does not support {precision} (supported: {', '.join(row.precisions)})")
    template = _resolve(row.exporter)(spec, shape, metadata, precision)
    if row.checker:
        _resolve(row.checker)(template)
    return template


def verify_template(fmt: str | FormatRow, template, shape: str) -> dict:  # noqa: ANN001
    """The row's once-per-template verification (report fields; {} for formats without one)."""
    row = _row(fmt)
    return _resolve(row.template_verifier)(template, shape) if row.template_verifier else {}


def verifier(fmt: str | FormatRow) -> Callable:
    """verifier(template, paths, params, inputs, label, refs=None) -> report dict; raises ExportError subclasses."""
    return _resolve(_row(fmt).verifier)
