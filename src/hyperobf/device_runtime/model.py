"""Load a user's MaskNet model file, check it against its own metadata, and run it.

Checks, each a one-line :class:`ModelError`: known file type (by suffix, from the export
format table), readable, sha256 equal to the manifest entry (when a manifest is given),
loadable by onnxruntime (ONNX or ORT format), HyperObf metadata of a known format version,
and an input/output signature that matches the spec in that metadata.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..model_formats import FORMATS, SUFFIXES
from ..model_meta import INPUT_NAME, OUTPUT_NAMES, MetadataError, parse_metadata
from ..spec import MaskNetSpec
from .session import SessionConfig, make_session


class ModelError(ValueError):
    """A model file we refuse to run (one-line reason)."""


def model_format(path: Path) -> str:
    """The export format of a model file, by suffix; ModelError if unknown or not runnable here."""
    name = path.name.lower()
    # Longest suffix first, so multi-part suffixes (".int8.onnx") win over ".onnx".
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix.lower()):
            fmt = SUFFIXES[suffix]
            if not FORMATS[fmt].runtime_loadable:
                raise ModelError(f"{path.name}: {fmt} models are not run by this runtime (onnxruntime); "
                                 f"use one of {', '.join(_loadable_suffixes())}")
            return fmt
    raise ModelError(f"{path.name}: unknown model file type; expected one of {', '.join(_loadable_suffixes())}")


def _loadable_suffixes() -> list[str]:
    return sorted(s for s, f in SUFFIXES.items() if FORMATS[f].runtime_loadable)


class MaskNetModel:
    """A user's MaskNet in an onnxruntime session. ``run`` maps (N,3,H,W) in [0,1] -> (protected, delta)."""

    def __init__(self, path: str | Path, config: SessionConfig | None = None,
                 expected_sha256: str | None = None) -> None:
        path = Path(path)
        self.path = path
        self.format = model_format(path)
        try:
            data = path.read_bytes()
        except IsADirectoryError:
            raise ModelError(f"{path}: is a folder, not a model file") from None
        except OSError as e:
            raise ModelError(f"cannot read model {path}: {e.strerror or e}") from None
        self.sha256 = hashlib.sha256(data).hexdigest()
        if expected_sha256 and self.sha256 != expected_sha256.lower():
            raise ModelError(f"model {path.name} sha256 does not match the manifest entry")
        self.config = config or SessionConfig()
        try:
            self.session = make_session(data, self.config)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ModelError(f"not a loadable ONNX model: {path.name} ({type(e).__name__})") from None
        try:
            props = dict(self.session.get_modelmeta().custom_metadata_map)
            self.meta = parse_metadata(props)
        except MetadataError as e:
            raise ModelError(f"{path.name}: {e}") from None
        except Exception as e:  # e.g. a build whose ORT-format reader exposes no metadata
            raise ModelError(f"{path.name}: cannot read model metadata ({type(e).__name__})") from None
        self.spec: MaskNetSpec = self.meta["spec"]
        self._check_signature()

    def _check_signature(self) -> None:
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        bad = f"{self.path.name}: input/output signature does not match a MaskNet"
        if len(ins) != 1 or ins[0].name != INPUT_NAME or tuple(o.name for o in outs) != OUTPUT_NAMES:
            raise ModelError(bad)
        shape = ins[0].shape
        if len(shape) != 4 or shape[1] != self.spec.in_channels:
            raise ModelError(f"{self.path.name}: input shape {shape} does not match the spec")
        if any(o.shape != shape or o.type != ins[0].type for o in outs):
            raise ModelError(bad + " (outputs must have the input's shape and type)")
        if ins[0].type not in ("tensor(float)", "tensor(float16)"):
            raise ModelError(f"{self.path.name}: input type {ins[0].type} is not float")
        h, w = shape[2], shape[3]
        self.fixed_size: int | None = None
        if isinstance(h, int) or isinstance(w, int):
            if h != w or h != self.spec.input_size:
                raise ModelError(f"{self.path.name}: fixed input {shape} != spec working size {self.spec.input_size}")
            self.fixed_size = h
        self.fixed_batch = isinstance(shape[0], int)
        self.input_dtype = np.float16 if ins[0].type == "tensor(float16)" else np.float32

    @property
    def protection(self) -> dict | None:
        """The protection record copied from the HyperNet's checkpoint (None: never measured)."""
        return self.meta.get("protection")

    @property
    def budget_fill(self) -> float:
        """The largest scale the budget rule may apply to this net's δ (1: down only; > 1: a net trained with a
        fill, whose δ is scaled up to the budget as in training)."""
        return float(self.meta.get("budget_fill", 1.0))

    @property
    def model_id(self) -> str:
        return str(self.meta.get("model_id", ""))

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: (N, 3, H, W) float32 in [0, 1] -> (protected, delta), float32."""
        if self.fixed_batch and x.shape[0] != 1:
            outs = [self.run(x[i:i + 1]) for i in range(x.shape[0])]
            return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
        out, delta = self.session.run(None, {INPUT_NAME: x.astype(self.input_dtype, copy=False)})
        return out.astype(np.float32, copy=False), delta.astype(np.float32, copy=False)

    def delta(self, x: np.ndarray) -> np.ndarray:
        """Only δ: x (N, 3, H, W) float32 in [0, 1] -> δ (N, 3, H, W) float32."""
        if self.fixed_batch and x.shape[0] != 1:
            return np.concatenate([self.delta(x[i:i + 1]) for i in range(x.shape[0])])
        (d,) = self.session.run([OUTPUT_NAMES[1]], {INPUT_NAME: x.astype(self.input_dtype, copy=False)})
        return d.astype(np.float32, copy=False)


def load_manifest(path: str | Path) -> dict[str, dict]:
    """manifest.jsonl -> {file name: row}."""
    rows = {}
    try:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["file"]] = row
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"cannot read manifest {path}: {type(e).__name__}") from None
    return rows


def load_model(path: str | Path, threads: int = 0, providers: list[str] | tuple[str, ...] | None = None,
               manifest: str | Path | None = None, config: SessionConfig | None = None) -> MaskNetModel:
    """Load and check a model; with a manifest, its sha256 must match the manifest entry.

    ``config`` (session options) wins over ``threads``/``providers`` when given.
    """
    expected = None
    if manifest:
        row = load_manifest(manifest).get(Path(path).name)
        if row is None:
            raise ModelError(f"model {Path(path).name} is not listed in manifest {manifest}")
        if not isinstance(row.get("sha256"), str):
            raise ModelError(f"manifest {manifest}: entry for {Path(path).name} has no sha256")
        expected = row["sha256"]
    if config is None:
        config = SessionConfig(threads=threads, providers=tuple(providers or ("cpu",)))
    return MaskNetModel(path, config, expected)
