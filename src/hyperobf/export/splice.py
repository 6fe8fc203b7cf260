"""Byte templates: one serialized model file whose per-user regions are overwritten in place.

A template is built once per (spec, format, precision, shape) with random *sentinel* values
in every per-user tensor; each sentinel's bytes are then located in the serialized file
(they must occur exactly once). Rendering a user = copy the template and overwrite those
regions — for N users at once as an (N, file length) uint8 array, no per-user serializer.
Every template is checked against its format's own serializer before use (the format
table's checker, run by :func:`hyperobf.export.registry.make_template`), so an offset
assumption that does not hold fails loudly, never silently.

:class:`SplicedTemplate` is what the ONNX, ORT and CoreML templates share: the retry over
sentinel seeds, ``encode`` and the render methods; a format adds only how it builds its files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import MaskNetSpec
from .precision import Slot, encode, slots

MODEL_ID_LEN = 24  # secrets_z.new_model_id(): 12 random bytes as hex
SINGLE_FILE = ""  # the files key of a single-file format's only file (a package's keys are relative paths)


@dataclass(frozen=True)
class Region:
    name: str  # slot name (see precision.slots) or "model_id"
    offset: int
    nbytes: int


def locate(blob: bytes, needle: bytes, what: str) -> int:
    """Offset of the only occurrence of ``needle`` in ``blob``; LookupError otherwise."""
    first = blob.find(needle)
    if first < 0:
        raise LookupError(f"template: {what} not found in the serialized file")
    if blob.find(needle, first + 1) >= 0:
        raise LookupError(f"template: {what} occurs more than once in the serialized file")
    return first


def sentinels(shapes: dict[str, tuple[tuple[int, ...], np.dtype]], seed: int) -> dict[str, np.ndarray]:
    """Random values per slot (distinct bytes, so each can be located). Floats in ±0.5, ints full range."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype) in shapes.items():
        if np.issubdtype(dtype, np.integer):
            out[name] = rng.integers(-127, 128, size=shape).astype(dtype)
        else:
            out[name] = (rng.random(shape) - 0.5).astype(dtype)
    return out


def placeholder_id(seed: int) -> str:
    return np.random.default_rng(seed + 1).bytes(MODEL_ID_LEN // 2).hex()


class ByteTemplate:
    """One file's template bytes plus the regions that change per user."""

    def __init__(self, blob: bytes, regions: list[Region]) -> None:
        self.blob = blob
        self.regions = regions
        self._base = np.frombuffer(blob, np.uint8)

    @classmethod
    def from_sentinels(cls, blob: bytes, values: dict[str, bytes], model_id: str | None) -> "ByteTemplate":
        regions = [Region(k, locate(blob, v, k), len(v)) for k, v in values.items()]
        if model_id is not None:
            regions.append(Region("model_id", locate(blob, model_id.encode(), "model id placeholder"), MODEL_ID_LEN))
        return cls(blob, regions)

    @property
    def size(self) -> int:
        return len(self.blob)

    def render(self, values: dict[str, bytes], model_id: str | None) -> bytes:
        """One user's file: ``values`` {region name: bytes of exactly the region's length}."""
        buf = bytearray(self.blob)
        for r in self.regions:
            data = model_id.encode() if r.name == "model_id" else values[r.name]
            if len(data) != r.nbytes:
                raise ValueError(f"{r.name}: {len(data)} bytes, template holds {r.nbytes}")
            buf[r.offset:r.offset + r.nbytes] = data
        return bytes(buf)

    def render_batch(self, values: dict[str, np.ndarray], model_ids: list[str],
                     out: np.ndarray | None = None) -> np.ndarray:
        """(n, size) uint8: row i is user i's file. values[name]: (n, ...) arrays in the stored dtype,
        strided views welcome (they are copied straight into the file bytes).

        ``out``: a buffer of at least n rows to reuse (fresh pages cost page faults per chunk).
        Only the bytes between regions are copied from the template: the regions are overwritten.
        """
        n = len(model_ids)
        fresh = out is None or out.shape[0] < n or out.shape[1] != self.size
        if fresh:
            out = np.empty((n, self.size), np.uint8)
        out = out[:n]
        for a, b in self._gaps():
            out[:, a:b] = self._base[a:b]
        for r in self.regions:
            dst = out[:, r.offset:r.offset + r.nbytes]  # (n, nbytes), rows contiguous
            if r.name == "model_id":
                ids = np.frombuffer("".join(model_ids).encode("ascii"), np.uint8)
                if ids.size != n * MODEL_ID_LEN:
                    raise ValueError(f"model ids must be {MODEL_ID_LEN} characters")
                dst[:] = ids.reshape(n, MODEL_ID_LEN)
                continue
            src = np.asarray(values[r.name]).reshape(n, -1)
            if src.shape[1] * src.dtype.itemsize != r.nbytes:
                raise ValueError(f"{r.name}: {src.shape[1] * src.dtype.itemsize} bytes per user, template holds {r.nbytes}")
            dst.view(src.dtype)[:] = src  # typed view of the file bytes: one (strided) copy
        return out

    def _gaps(self) -> list[tuple[int, int]]:
        """Byte ranges of the template that no region covers."""
        if not hasattr(self, "_gap_list"):
            gaps, pos = [], 0
            for r in sorted(self.regions, key=lambda r: r.offset):
                if r.offset > pos:
                    gaps.append((pos, r.offset))
                pos = max(pos, r.offset + r.nbytes)
            if pos < self.size:
                gaps.append((pos, self.size))
            self._gap_list = gaps
        return self._gap_list


def assert_same(rendered: bytes, reference: bytes, what: str) -> None:
    """Self-check of a template: splicing must reproduce the format's own serialization."""
    if rendered != reference:
        raise RuntimeError(f"{what}: spliced bytes differ from the serializer's output (template layout changed)")


class SplicedTemplate:
    """Base of the per-format templates: ``files`` {relative path: ByteTemplate} built from sentinels.

    A subclass sets ``format`` (its row in the format table), ``title`` and ``seeds`` (sentinel
    seeds tried in turn: a sentinel colliding with other bytes is astronomically rare; retry
    anyway) and implements :meth:`_build`. ``seed`` is the one that worked; checkers use the
    next one for values the template has not seen.
    """

    format = ""
    title = ""
    seeds: range = range(0, 8, 2)

    def __init__(self, spec: MaskNetSpec, shape: str, metadata: dict[str, str], precision: str = "fp32") -> None:
        self.spec, self.shape, self.precision = spec, shape, precision
        self.slots: list[Slot] = slots(spec, precision)
        self.metadata = dict(metadata)
        self.files: dict[str, ByteTemplate] = {}
        last: Exception | None = None
        for seed in self.seeds:
            try:
                self._build(seed)
                self.seed = seed
                return
            except LookupError as e:
                last = e
        raise RuntimeError(f"cannot build the {precision} {self.title} template: {last}")

    def _build(self, seed: int) -> None:
        """Serialize the format with sentinels of ``seed`` and locate them: fills :attr:`files`."""
        raise NotImplementedError

    def sentinel_shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """What the sentinels are drawn as: the stored tensors themselves (CoreML: float32 params)."""
        return {s.name: (s.shape, s.dtype) for s in self.slots}

    # --- per user ------------------------------------------------------------------
    def encode(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{param: (n, *shape) float32} -> {slot: (n, ...)} stored tensors of this precision."""
        return encode(self.spec, self.precision, params)

    def render_files(self, params: dict[str, np.ndarray], model_id: str) -> dict[str, bytes]:
        """One user's files {relative path: bytes}; params {name: float32 array of spec shape}.
        Model ids of another length than the template's take the format's serializer."""
        stored = {k: v[0] for k, v in self.encode({k: np.asarray(v)[None] for k, v in params.items()}).items()}
        if len(model_id) != MODEL_ID_LEN or not model_id.isascii():
            return self._serialize_files(stored, model_id)
        raw = {k: np.ascontiguousarray(v).tobytes() for k, v in stored.items()}
        return {rel: t.render(raw, model_id) for rel, t in self.files.items()}

    def render(self, params: dict[str, np.ndarray], model_id: str) -> bytes:
        """One user's file (single-file formats)."""
        return self.render_files(params, model_id)[SINGLE_FILE]

    def _serialize_files(self, stored: dict[str, np.ndarray], model_id: str) -> dict[str, bytes]:
        """The slow path for odd model ids; a format without one refuses them."""
        raise ValueError(f"model ids must be {MODEL_ID_LEN} characters")

    def render_batch(self, stored: dict[str, np.ndarray], model_ids: list[str],
                     out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """{relative path: (n, file bytes) uint8} for n users' encoded tensors (see :meth:`encode`);
        ``out``: buffers from an earlier call to reuse."""
        return {rel: t.render_batch(stored, model_ids, (out or {}).get(rel)) for rel, t in self.files.items()}
