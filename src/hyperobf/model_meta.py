"""The metadata dict written into every exported model (ONNX metadata_props, CoreML
user_defined_metadata) and read back by the device runtime. Pure Python: no torch.

Every value is a JSON document (read back with json.loads, never eval).
"""

from __future__ import annotations

import json
import time

from . import __version__
from .protection import RecordError
from .protection import validate as validate_protection
from .spec import MaskNetSpec

METADATA_FORMAT = 1
PREFIX = "hyperobf."
INPUT_NAME = "image"
OUTPUT_NAMES = ("protected", "delta")


def build_metadata(
    spec: MaskNetSpec, model_id: str, checkpoint_sha256: str, *, method: str = "hypernet",
    shape: str = "fixed", precision: str = "fp32", created: float | None = None, protection: dict | None = None,
    model_format: str | None = None, budget_fill: float = 1.0,
) -> dict[str, str]:
    """The one metadata dict (str -> JSON str) for a user's model file.

    ``protection``: the checkpoint's protection record (:mod:`hyperobf.protection`), copied as is;
    null means nobody measured this HyperNet's protection, and the runtime says so.
    ``model_format``: the format table's row name (``"onnx"``, ``"ort"``, ``"coreml"``); None leaves
    the key out (models built outside the exporter, e.g. in tests).
    ``budget_fill``: the largest scale the device's budget rule may apply to this net's δ (the HyperNet's
    ``TrainConfig.ship_fill``: > 1 for nets trained with a fill, which scale a δ *up* to the budget); 1 (scale
    down only, every net before it) leaves the key out.
    """
    validate_protection(protection)
    size = spec.input_size
    in_shape = [1, 3, size, size] if shape == "fixed" else ["N", 3, "H", "W"]
    fields = {
        "format_version": METADATA_FORMAT,
        "spec": spec.to_dict(),
        "spec_digest": spec.digest(),
        "rho_pixel": spec.rho_pixel,
        "input": {"name": INPUT_NAME, "shape": in_shape, "layout": "NCHW", "color": "RGB", "range": [0.0, 1.0]},
        "outputs": list(OUTPUT_NAMES),
        "shape": shape,
        "precision": precision,
        "method": method,
        "model_id": model_id,
        "checkpoint_sha256": checkpoint_sha256,
        "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created or time.time())),
        "protection": protection,
    }
    if budget_fill != 1.0:
        if not 1.0 <= budget_fill <= 64.0:
            raise ValueError(f"budget_fill must be in [1, 64], got {budget_fill}")
        fields["budget_fill"] = float(budget_fill)
    if model_format is not None:  # last: the key order is the order of the model file's metadata entries
        fields["format"] = model_format
    return {PREFIX + k: json.dumps(v, sort_keys=True, separators=(",", ":")) for k, v in fields.items()}


class MetadataError(ValueError):
    pass


def parse_metadata(props: dict[str, str]) -> dict:
    """Inverse of :func:`build_metadata`; MetadataError if not a HyperObf model we can run."""
    if PREFIX + "format_version" not in props:
        raise MetadataError("not a HyperObf model (no hyperobf metadata)")
    out = {}
    for key, raw in props.items():
        if key.startswith(PREFIX):
            try:
                out[key[len(PREFIX):]] = json.loads(raw)
            except json.JSONDecodeError:
                raise MetadataError(f"model metadata {key!r} is not valid JSON") from None
    if out["format_version"] != METADATA_FORMAT:
        raise MetadataError(f"unknown model format version {out['format_version']!r} (this runtime reads {METADATA_FORMAT})")
    try:
        spec = MaskNetSpec.from_dict(out["spec"])
    except (TypeError, ValueError, KeyError) as e:
        raise MetadataError(f"model metadata holds an invalid MaskNet spec: {e}") from None
    if spec.digest() != out.get("spec_digest"):
        raise MetadataError("model metadata spec digest does not match its spec")
    out["spec"] = spec
    fill = out.get("budget_fill", 1.0)
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 1.0 <= fill <= 64.0:
        raise MetadataError(f"model metadata budget_fill must be a number in [1, 64], got {fill!r}")
    try:  # models exported before the record existed have none: "not measured"
        out["protection"] = validate_protection(out.get("protection"))
    except RecordError as e:
        raise MetadataError(f"model metadata: {e}") from None
    return out
