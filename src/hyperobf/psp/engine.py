"""The generation engine: a loaded HyperNet checkpoint -> batched MaskNet weights,
probe fingerprints, and per-user model files in the offered formats.

One engine per process; the batcher thread is its only caller, so it needs no locks.
Torch work (generation, probe δ) runs on ``device`` (CUDA when present and asked for).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..export import formats as format_table
from ..export.issue import generate_users
from ..model_meta import build_metadata
from ..train.checkpoint import Loaded, load_checkpoint
from .fingerprint import Fingerprinter


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


@dataclass(frozen=True)
class Variant:
    """What a client may ask for: a format, a precision and an input shape."""

    format: str
    precision: str
    shape: str

    @property
    def media_type(self) -> str:
        return "application/zip" if _is_directory(self.format) else "application/octet-stream"

    def file_name(self, model_id: str) -> str:
        row = format_table.FORMATS[self.format]
        name = row.file_name(f"masknet-{model_id}", self.precision) if hasattr(row, "file_name") else \
            f"masknet-{model_id}{row.suffix}"
        return name + (".zip" if _is_directory(self.format) else "")


def _is_directory(fmt: str) -> bool:
    return bool(getattr(format_table.FORMATS[fmt], "is_directory", False))


def _onnx_renderer(spec, variant: Variant, meta: dict[str, str]):  # noqa: ANN001, ANN202
    from ..export.onnx_export import OnnxTemplate

    tpl = OnnxTemplate(spec, variant.shape, meta)
    return tpl.render


# format -> (precisions this service can render, renderer factory). Only formats that are also
# rows of the exporter's format table are offered.
_RENDERERS = {"onnx": (("fp32",), _onnx_renderer)}


class GenerationEngine:
    """Checkpoint-bound state: source on ``device``, fingerprinter, renderers."""

    def __init__(self, loaded: Loaded, device: str = "auto", probe_images: int = 4, probe_size: int = 32,
                 fingerprint_dim: int = 512) -> None:
        self.device = pick_device(device)
        self.loaded = loaded
        self.spec = loaded.spec
        self.method = loaded.config.method
        self.hypernet_sha256 = loaded.sha256
        self.z_dim = int(loaded.source.z_dim)
        loaded.source.to(self.device).eval()
        if probe_size % self.spec.stride_product:
            raise ValueError(f"probe_size {probe_size} must be divisible by the structure's stride "
                             f"product {self.spec.stride_product}")
        self.fingerprinter = Fingerprinter(probe_images, probe_size, fingerprint_dim, self.device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **kw) -> "GenerationEngine":
        loaded = load_checkpoint(path)
        if loaded.config.method == "static":
            # every "user" would get the same net: the near-duplicate check would refuse them all
            raise ValueError("a static (one-net) checkpoint cannot issue per-user MaskNets; use a HyperNet")
        return cls(loaded, device, **kw)

    # --- what can be asked for ------------------------------------------------------
    def offered(self) -> dict[str, tuple[str, ...]]:
        """{format: precisions} this service renders (the exporter's table ∩ our renderers)."""
        out = {}
        for name, (precisions, _) in _RENDERERS.items():
            row = format_table.FORMATS.get(name)
            if row is None:
                continue
            table_precisions = getattr(row, "precisions", ("fp32",))
            out[name] = tuple(p for p in precisions if p in table_precisions)
        return {k: v for k, v in out.items() if v}

    def check_variant(self, variant: Variant) -> None:
        """ValueError (shown to the client) unless the variant is offered."""
        offered = self.offered()
        if variant.format not in offered:
            raise ValueError(f"format {variant.format!r} is not offered; choose from {', '.join(offered)}")
        if variant.precision not in offered[variant.format]:
            raise ValueError(f"precision {variant.precision!r} is not offered for {variant.format}; "
                             f"choose from {', '.join(offered[variant.format])}")
        if variant.shape not in ("fixed", "dynamic"):
            raise ValueError(f"shape must be 'fixed' or 'dynamic', got {variant.shape!r}")

    # --- generation -------------------------------------------------------------------
    def generate(self, z: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """z (n, z_dim) float32 -> (weights {name: (n, *shape)} float32 numpy, fingerprints (n, dim))."""
        weights = generate_users(self.loaded, z)
        params = {k: torch.from_numpy(v).to(self.device) for k, v in weights.items()}
        return weights, self.fingerprinter(self.spec, params)

    def renderers(self, variants: set[Variant], created: float | None = None) -> dict:
        """{variant: render(params_one_user, model_id) -> bytes}, built once per batch so the
        metadata's creation time is the issuance time."""
        created = created or time.time()
        out = {}
        for v in variants:
            self.check_variant(v)
            meta = build_metadata(self.spec, "", self.hypernet_sha256, method=self.method, shape=v.shape,
                                  precision=v.precision, created=created)
            out[v] = _RENDERERS[v.format][1](self.spec, v, meta)
        return out
