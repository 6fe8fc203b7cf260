"""Verify CoreML packages as far as Linux allows.

CoreML prediction needs macOS, so it is reported as skipped, never as passed. What is checked:
the package loads as a spec (``ct.utils.load_spec``) and as ``MLModel(skip_model_load=True)``;
every weight read back with coremltools' own blob reader equals the generated one (exactly for
fp32; for fp16 exactly its float16 rounding, i.e. within 2^-11 relative); the metadata reads back as JSON with the user's model id;
and δ of the read-back weights, computed by torch at the package's precision (an emulation,
labelled as such), stays within 5% of the fp32 reference.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..model_meta import PREFIX, MetadataError, parse_metadata
from .coreml_export import PACKAGE_FILES, const_name, quiet
from .precision import FP16_MAX
from .errors import ReferenceMismatch
from .splice import placeholder_id, sentinels
from .verify import Refs, Tally, VerifyInputs, reference

PREDICTION = "skipped (needs macOS)"


def read_package(path: Path, spec, precision: str) -> tuple[dict[str, np.ndarray], dict[str, str], object]:
    """Weights {param: float32 array}, user-defined metadata and the spec, read with coremltools."""
    with quiet():
        import coremltools as ct
        from coremltools.libmilstoragepython import _BlobStorageReader

        mlspec = ct.utils.load_spec(str(path))
        ct.models.MLModel(str(path), skip_model_load=True)
    consts = {}
    for fn in mlspec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                if op.type == "const":
                    consts[op.outputs[0].name] = op.attributes["val"]
    reader = _BlobStorageReader(str(path / PACKAGE_FILES[2]))
    out = {}
    for name, shape in spec.param_shapes().items():
        val = consts.get(const_name(name, precision))
        if val is None:
            raise ReferenceMismatch(f"{path.name}: no const {const_name(name, precision)} in the program")
        if val.HasField("blobFileValue"):
            off = val.blobFileValue.offset
            arr = np.asarray(reader.read_fp16_data(off) if precision == "fp16" else reader.read_float_data(off))
            if precision == "fp16":
                arr = arr.view(np.float16) if arr.dtype == np.uint16 else arr
        elif precision == "fp16":
            arr = np.frombuffer(val.immediateValue.tensor.bytes.values, np.float16)
        else:
            arr = np.asarray(val.immediateValue.tensor.floats.values, np.float32)
        out[name] = np.asarray(arr, np.float32).reshape(shape)
    meta = dict(mlspec.description.metadata.userDefined)
    return out, meta, mlspec


def _expected(generated: np.ndarray, precision: str) -> np.ndarray:
    """What the package must hold, exactly, for a generated float32 tensor."""
    if precision == "fp16":
        return np.clip(generated, -FP16_MAX, FP16_MAX).astype(np.float16).astype(np.float32)
    return generated.astype(np.float32)


def check_template(template) -> None:  # noqa: ANN001 - a CoreMLTemplate
    """The format table's checker: splice other sentinel values into a package and read them back exactly."""
    values = sentinels(template.sentinel_shapes(), template.seed + 1)
    mid = placeholder_id(template.seed + 1)
    with tempfile.TemporaryDirectory(prefix="hyperobf-coreml-check-") as tmp:
        pkg = Path(tmp) / "u.mlpackage"
        for rel, data in template.render_files(values, mid).items():
            (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
            (pkg / rel).write_bytes(data)
        got, meta, _ = read_package(pkg, template.spec, template.precision)
    for name, v in values.items():
        if not np.array_equal(got[name], _expected(v, template.precision)):
            raise RuntimeError(f"{template.precision} CoreML template: {name} does not read back as spliced")
    if json.loads(meta.get(PREFIX + "model_id", "null")) != mid:
        raise RuntimeError(f"{template.precision} CoreML template: model id does not read back as spliced")


def _emulated_delta(spec, weights: dict[str, np.ndarray], x: np.ndarray, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """torch MaskNet on the read-back weights at the package's compute precision (not CoreML itself)."""
    import torch

    from ..models.masknet import outputs_from_numpy

    dtype = torch.float16 if precision == "fp16" else torch.float32
    out, delta = outputs_from_numpy(spec, {k: v[None] for k, v in weights.items()}, x, dtype)
    return out[0], delta[0]


def verify_coreml(template, paths: list[Path], params: dict[str, np.ndarray], inputs: VerifyInputs, label: str,
                  refs: Refs | None = None) -> dict:
    """Read-back checks per package plus the emulated δ check (see module docstring)."""
    tally = Tally(template.precision)
    refs = refs if refs is not None else reference(template.spec, params, inputs)
    max_weight_diff = 0.0
    for i, path in enumerate(paths):
        got, meta, mlspec = read_package(path, template.spec, template.precision)
        for name, w in got.items():
            diff = float(np.abs(w - _expected(params[name][i], template.precision)).max())
            if diff > 0:
                raise ReferenceMismatch(f"{label}: {path.name} weight {name} reads back off by {diff:.3g}")
            max_weight_diff = max(max_weight_diff, float(np.abs(w - params[name][i]).max()))
        try:
            parsed = parse_metadata(meta)
        except MetadataError as e:
            raise ReferenceMismatch(f"{label}: {path.name}: {e}") from None
        if parsed["spec"] != template.spec or not parsed.get("model_id"):
            raise ReferenceMismatch(f"{label}: {path.name} metadata does not match the spec / lacks a model id")
        # fp32: the weights read back bit-identical to the reference's (checked above), so the fp32
        # program is the reference; nothing to emulate (and CoreML itself cannot run here).
        if template.precision != "fp32":
            for name, x in inputs.groups.items():
                out, delta = _emulated_delta(template.spec, got, x, template.precision)
                tally.add(name, x, out, delta, refs[name][0][i], refs[name][1][i])
        tally.add_reference(refs, i)
        tally.users += 1
        tally.check(label + " (torch emulation)", path.name)
    spec_version = int(mlspec.specificationVersion)
    return {**tally.row(), "weights_max_abs_diff_vs_generated": max_weight_diff,
            "checker": "coremltools load_spec + MLModel(skip_model_load=True) + blob read-back",
            "prediction": PREDICTION,
            "runtime": ("none: fp32 weights bit-identical to the torch reference (CoreML not run)" if template.precision == "fp32"
                        else f"torch emulation at {template.precision} of the read-back weights (CoreML not run)"),
            "deployment_target": "iOS15", "specification_version": spec_version, "faces": inputs.faces_source}
