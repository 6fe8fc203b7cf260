"""Issue N users' MaskNets from a trained checkpoint: CSPRNG latents -> batched generation
-> one model file per user and format -> manifest.jsonl. All files are written into a
staging folder inside ``out`` and moved into place only when everything succeeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..model_meta import build_metadata
from ..train.checkpoint import Loaded
from .onnx_export import OnnxTemplate, verify_onnx
from .secrets_z import new_model_id, secure_normal


@dataclass
class IssueReport:
    out_dir: Path
    manifest: Path
    n_users: int
    files: int
    seconds: dict = field(default_factory=dict)
    verified: dict = field(default_factory=dict)


@torch.no_grad()
def generate_users(loaded: Loaded, z: np.ndarray, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Batched weights for users with latents z: {name: (n, *shape)} float32 numpy."""
    src = loaded.source
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(z), chunk):
        params = src.issue(torch.from_numpy(z[i:i + chunk]))
        for k, v in params.items():
            out.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def _check_out_dir(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise PermissionError(f"output directory is not writable: {out}")


def issue_users(
    loaded: Loaded, n_users: int, out: str | Path, *, shape: str = "fixed", verify: str = "sample",
    verify_inputs: np.ndarray | None = None, seeds_file: str | Path | None = None, user_prefix: str = "user",
) -> IssueReport:
    """Write ``<user>.onnx`` per user plus ``manifest.jsonl`` into ``out``."""
    if n_users < 1:
        raise ValueError("number of users must be >= 1")
    out = Path(out)
    _check_out_dir(out)
    spec = loaded.spec
    t0 = time.perf_counter()
    z = secure_normal(n_users, loaded.source.z_dim)
    params = generate_users(loaded, z)
    t_gen = time.perf_counter()

    meta = build_metadata(spec, "", loaded.sha256, method=loaded.config.method, shape=shape)
    template = OnnxTemplate(spec, shape, meta)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        rows = []
        width = max(4, len(str(n_users - 1)))
        for i in range(n_users):
            user = f"{user_prefix}{i:0{width}d}"
            model_id = new_model_id()
            data = template.render({k: v[i] for k, v in params.items()}, model_id)
            fname = f"{user}.onnx"
            (stage / fname).write_bytes(data)
            rows.append({
                "user": user, "model_id": model_id, "file": fname, "format": "onnx",
                "sha256": hashlib.sha256(data).hexdigest(), "structure": spec.name,
                "spec_digest": spec.digest(), "checkpoint_sha256": loaded.sha256, "method": loaded.config.method,
            })
        t_write = time.perf_counter()
        if verify_inputs is None:
            rng = np.random.default_rng(0)
            verify_inputs = rng.random((2, 3, spec.input_size, spec.input_size), dtype=np.float32)
        check = range(n_users) if verify == "all" else sorted({0, n_users // 2, n_users - 1}) if verify == "sample" else []
        worst = 0.0
        for i in check:
            data = (stage / rows[i]["file"]).read_bytes()
            worst = max(worst, verify_onnx(data, spec, {k: v[i] for k, v in params.items()}, verify_inputs))
        t_verify = time.perf_counter()
        manifest_tmp = stage / "manifest.jsonl"
        manifest_tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        if seeds_file:
            _write_seeds(Path(seeds_file), rows, z)
        for r in rows:
            os.replace(stage / r["file"], out / r["file"])
        os.replace(manifest_tmp, out / "manifest.jsonl")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    t_end = time.perf_counter()
    return IssueReport(
        out, out / "manifest.jsonl", n_users, n_users,
        seconds={"generate": t_gen - t0, "write": t_write - t_gen, "verify": t_verify - t_write, "total": t_end - t0},
        verified={"onnx": {"checked": len(check), "max_abs_diff": worst}},
    )


def _write_seeds(path: Path, rows: list[dict], z: np.ndarray) -> None:
    """Secret latents for re-issue: JSON lines, created with mode 0600 (never in model files)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for r, zi in zip(rows, z):
            f.write(json.dumps({"user": r["user"], "model_id": r["model_id"], "z": zi.tolist()}) + "\n")
