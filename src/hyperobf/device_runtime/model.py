"""Load a user's MaskNet model file, check it against its own metadata, and run it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..model_meta import INPUT_NAME, OUTPUT_NAMES, MetadataError, parse_metadata
from ..spec import MaskNetSpec


class ModelError(ValueError):
    """A model file we refuse to run (one-line reason)."""


class MaskNetModel:
    """A user's MaskNet in an onnxruntime session. ``run`` maps (N,3,H,W) in [0,1] -> (protected, delta)."""

    def __init__(self, path: str | Path, threads: int = 0, providers: list[str] | None = None,
                 expected_sha256: str | None = None) -> None:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"cannot read model {path}: {e.strerror or e}") from None
        self.sha256 = hashlib.sha256(data).hexdigest()
        if expected_sha256 and self.sha256 != expected_sha256:
            raise ModelError(f"model {path.name} sha256 does not match the manifest entry")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        avail = ort.get_available_providers()
        chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in avail] or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(data, sess_options=opts, providers=chosen)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ModelError(f"not a loadable ONNX model: {path.name} ({type(e).__name__})") from None
        try:
            self.meta = parse_metadata(dict(self.session.get_modelmeta().custom_metadata_map))
        except MetadataError as e:
            raise ModelError(f"{path.name}: {e}") from None
        self.spec: MaskNetSpec = self.meta["spec"]
        self.path = path
        self._check_signature()

    def _check_signature(self) -> None:
        ins = self.session.get_inputs()
        outs = [o.name for o in self.session.get_outputs()]
        if len(ins) != 1 or ins[0].name != INPUT_NAME or tuple(outs) != OUTPUT_NAMES:
            raise ModelError(f"{self.path.name}: input/output signature does not match a MaskNet")
        shape = ins[0].shape
        if len(shape) != 4 or shape[1] != self.spec.in_channels:
            raise ModelError(f"{self.path.name}: input shape {shape} does not match the spec")
        self.fixed_size = shape[2] if isinstance(shape[2], int) and isinstance(shape[3], int) else None
        if self.fixed_size is not None and self.fixed_size != self.spec.input_size:
            raise ModelError(f"{self.path.name}: fixed input {shape} != spec working size {self.spec.input_size}")
        self.input_dtype = np.float16 if "float16" in ins[0].type else np.float32

    @property
    def model_id(self) -> str:
        return self.meta.get("model_id", "")

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: (N, 3, H, W) float32 in [0, 1] -> (protected, delta), float32."""
        if self.fixed_size is not None and x.shape[0] != 1:
            outs = [self.run(x[i:i + 1]) for i in range(x.shape[0])]
            return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
        out, delta = self.session.run(None, {INPUT_NAME: x.astype(self.input_dtype, copy=False)})
        return out.astype(np.float32, copy=False), delta.astype(np.float32, copy=False)


def load_manifest(path: str | Path) -> dict[str, dict]:
    """manifest.jsonl -> {file name: row}."""
    rows = {}
    try:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["file"]] = row
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"cannot read manifest {path}: {type(e).__name__}") from None
    return rows


def load_model(path: str | Path, threads: int = 0, providers: list[str] | None = None,
               manifest: str | Path | None = None) -> MaskNetModel:
    """Load and check a model; with a manifest, its sha256 must match the manifest entry."""
    expected = None
    if manifest:
        row = load_manifest(manifest).get(Path(path).name)
        if row is None:
            raise ModelError(f"model {Path(path).name} is not listed in manifest {manifest}")
        expected = row["sha256"]
    return MaskNetModel(path, threads, providers, expected)
