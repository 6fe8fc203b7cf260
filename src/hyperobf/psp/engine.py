"""The generation engine: a loaded HyperNet checkpoint -> batched MaskNet weights,
probe fingerprints, and per-user model files in the formats of the format table
(model_formats, run by export.registry: ONNX, ORT, CoreML; fp32 / fp16 / int8 as each row allows).

One engine per process; the batcher thread is its only caller, so it needs no locks.
Torch work (generation, probe δ) runs on ``device`` (CUDA when present and asked for).
"""

from __future__ import annotations

import io
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import model_formats as format_table
from ..devices import pick_device
from ..model_meta import build_metadata
from ..train.checkpoint import Loaded, load_checkpoint
from ..train.sources import generate_users
from .fingerprint import Fingerprinter

log = logging.getLogger("hyperobf.psp")


class TemplateUnavailable(RuntimeError):
    """A variant's exporter template cannot be built on this server (reason in the message)."""


@dataclass(frozen=True)
class Variant:
    """What a client may ask for: a format, a precision and an input shape."""

    format: str
    precision: str
    shape: str

    @property
    def is_directory(self) -> bool:
        return bool(format_table.FORMATS[self.format].is_directory)

    @property
    def media_type(self) -> str:
        return "application/zip" if self.is_directory else "application/octet-stream"

    def file_name(self, model_id: str) -> str:
        """``masknet-<id>.onnx``, ``masknet-<id>.fp16.ort``, ``masknet-<id>.mlpackage.zip`` (a package folder, zipped)."""
        name = format_table.FORMATS[self.format].file_name(f"masknet-{model_id}", self.precision)
        return name + (".zip" if self.is_directory else "")


class Renderer:
    """One variant's exporter template (from the exporter's format table): batched weights ->
    one file per user. Package formats (CoreML .mlpackage) become one deterministic zip."""

    def __init__(self, spec, variant: Variant, meta: dict[str, str]) -> None:  # noqa: ANN001
        from ..export.registry import make_template

        self.variant = variant
        self.template = make_template(variant.format, spec, variant.shape, meta, variant.precision)

    def render(self, weights: dict[str, np.ndarray], model_ids: list[str]) -> list[bytes]:
        """weights {name: (n, *shape) float32}, n model ids (24 hex) -> n files' bytes."""
        files = self.template.render_batch(self.template.encode(weights), model_ids)  # {rel: (n, nbytes) uint8}
        if not self.variant.is_directory:
            (arr,) = files.values()
            return [arr[i].tobytes() for i in range(len(model_ids))]
        return [self._zip(model_id, {rel: arr[i] for rel, arr in files.items()}) for i, model_id in enumerate(model_ids)]

    def _zip(self, model_id: str, files: dict[str, np.ndarray]) -> bytes:
        folder = self.variant.file_name(model_id)[:-len(".zip")]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for rel in sorted(files):
                info = zipfile.ZipInfo(f"{folder}/{rel}", date_time=(1980, 1, 1, 0, 0, 0))  # fixed: same bytes, same sha
                info.external_attr = 0o644 << 16
                zf.writestr(info, files[rel].tobytes())
        return buf.getvalue()


class GenerationEngine:
    """Checkpoint-bound state: source on ``device``, fingerprinter, renderers."""

    def __init__(self, loaded: Loaded, device: str = "auto", probe_images: int = 4, probe_size: int = 16,
                 fingerprint_dim: int = 512) -> None:
        self.device = pick_device(device)
        self.loaded = loaded
        self.spec = loaded.spec
        self.spec_digest = loaded.spec.digest()  # computed once: it serialises the whole spec
        self.method = loaded.config.method
        self.hypernet_sha256 = loaded.sha256
        self.protection = loaded.payload.get("protection")  # copied into every issued model's metadata
        self.z_dim = int(loaded.source.z_dim)
        loaded.source.to(self.device).eval()
        if probe_size % self.spec.stride_product:
            raise ValueError(f"probe_size {probe_size} must be divisible by the structure's stride "
                             f"product {self.spec.stride_product}")
        self.fingerprinter = Fingerprinter(probe_images, probe_size, fingerprint_dim, self.device)
        # Templates are cached for the process; the metadata's "created" is therefore the time the
        # service started (the database's issued_at is the issuance time).
        self.created = time.time()
        self._renderers: dict[Variant, Renderer] = {}
        self._broken: dict[Variant, str] = {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **kw) -> "GenerationEngine":
        loaded = load_checkpoint(path)
        if loaded.config.method == "static":
            # every "user" would get the same net: the near-duplicate check would refuse them all
            raise ValueError("a static (one-net) checkpoint cannot issue per-user MaskNets; use a HyperNet")
        return cls(loaded, device, **kw)

    # --- what can be asked for ------------------------------------------------------
    def offered(self) -> dict[str, tuple[str, ...]]:
        """{format: precisions}: every row of the exporter's format table that has an exporter,
        minus variants whose template failed to build on this server."""
        out = {}
        for name, row in format_table.FORMATS.items():
            if not row.exporter:
                continue
            precisions = tuple(p for p in row.precisions if not any(
                v.format == name and v.precision == p for v in self._broken))
            if precisions:
                out[name] = precisions
        return out

    def check_variant(self, variant: Variant) -> None:
        """ValueError (shown to the client) unless the variant is offered."""
        offered = self.offered()
        if variant.format not in offered:
            raise ValueError(f"format {variant.format!r} is not offered; choose from {', '.join(offered)}")
        if variant.precision not in offered[variant.format]:
            raise ValueError(f"precision {variant.precision!r} is not offered for {variant.format}; "
                             f"choose from {', '.join(offered[variant.format])}")
        if variant.shape not in format_table.SHAPES:
            raise ValueError(f"shape must be one of {', '.join(format_table.SHAPES)}, got {variant.shape!r}")

    # --- generation -------------------------------------------------------------------
    def generate(self, z: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """z (n, z_dim) float32 -> (weights {name: (n, *shape)} float32 numpy, fingerprints (n, dim))."""
        weights = generate_users(self.loaded, z)
        params = {k: torch.from_numpy(v).to(self.device) for k, v in weights.items()}
        return weights, self.fingerprinter(self.spec, params)

    def renderer(self, variant: Variant) -> Renderer:
        """The variant's renderer, built on first use and cached (a CoreML template takes seconds).
        A template that cannot be built here (e.g. coremltools missing) is remembered as broken."""
        if variant not in self._renderers:
            if variant in self._broken:
                raise TemplateUnavailable(self._broken[variant])
            self.check_variant(variant)
            meta = build_metadata(self.spec, "", self.hypernet_sha256, method=self.method, shape=variant.shape,
                                  precision=variant.precision, created=self.created,
                                  protection=self.protection, model_format=variant.format,
                                  budget_fill=self.loaded.config.ship_fill)
            t = time.perf_counter()
            try:
                self._renderers[variant] = Renderer(self.spec, variant, meta)
            except Exception as e:  # noqa: BLE001 - any exporter failure makes this variant unavailable
                self._broken[variant] = f"{variant.format} {variant.precision} is unavailable on this server " \
                                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                log.error("template %s/%s/%s failed: %s", variant.format, variant.precision, variant.shape,
                          type(e).__name__)
                raise TemplateUnavailable(self._broken[variant]) from None
            log.info("template %s/%s/%s ready in %.2f s", variant.format, variant.precision, variant.shape,
                     time.perf_counter() - t)
        return self._renderers[variant]
