"""The exporter's errors: each a ValueError with a one-line reason, and nothing written.

Kept apart from the code that raises them so the CLI, the writer and every format's checks
share them without importing each other.
"""

from __future__ import annotations


class ExportError(ValueError):
    """An export that cannot be done as asked (one-line reason; nothing is written)."""


class ReferenceMismatch(ExportError):
    """A written model does not reproduce the torch reference (or fails its format's checker)."""


class ExportRefused(ExportError):
    """A reduced-precision variant changes δ by more than ``verify.DELTA_TOL``."""
