"""Checkpoints carry spec + config + state, so a source rebuilds from the file alone."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..spec import MaskNetSpec
from .config import TrainConfig

CHECKPOINT_FORMAT = 1


@dataclass
class Loaded:
    spec: MaskNetSpec
    config: TrainConfig
    source: nn.Module
    payload: dict
    sha256: str


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """Write to a temp file in the target folder, then rename: never a partial checkpoint."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, spec: MaskNetSpec, cfg: TrainConfig, source: nn.Module, **state) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "spec": spec.to_json(),
        "config": cfg.to_dict(),
        "method": cfg.method,
        "source": source.state_dict(),
        **state,
    }
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> Loaded:
    """Rebuild the source from a checkpoint; ValueError with a one-line reason if it is not one."""
    from .sources import build_source

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt / not a torch file
        raise ValueError(f"not a HyperObf checkpoint ({path.name}): {type(e).__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT or "spec" not in payload:
        raise ValueError(f"not a HyperObf checkpoint (format {CHECKPOINT_FORMAT}): {path}")
    spec = MaskNetSpec.from_json(payload["spec"])
    cfg = TrainConfig.from_dict(payload["config"])
    source = build_source(spec, cfg)
    source.load_state_dict(payload["source"])
    source.eval()
    return Loaded(spec, cfg, source, payload, file_sha256(path))


def record_protection(path: str | Path, entries: list[dict], preset: str | None = None,
                      alike: tuple[dict, str, str] | None = None) -> dict:
    """Add measured attacks to the checkpoint's protection record (rewritten atomically); returns it.

    ``alike``: (similarity, data, source) — how alike the users' nets perturb faces, replacing the record's
    (:func:`hyperobf.protection.with_alike`).

    The training loop writes a fresh payload every epoch without a record: a net trained further
    is a new net, and its protection has to be measured again.
    """
    from ..protection import merge, with_alike

    path = Path(path)
    payload = torch.load(path, map_location="cpu", weights_only=False)  # RNG states stay CPU tensors
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a HyperObf checkpoint: {path}")
    payload["protection"] = merge(payload.get("protection"), entries, preset)
    if alike is not None:
        payload["protection"] = with_alike(payload["protection"], *alike)
    atomic_torch_save(payload, path)
    return payload["protection"]

