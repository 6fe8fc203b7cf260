"""`hyperobf export-refiner`: the hybrid refinement's step and embed graphs (plain ONNX) for the device
(torch and onnx are imported inside the command)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..refiner_meta import DEFAULT_STEP, DEFAULT_STEPS

from .common import errors_as_one_line, fail

_SHARED_MODELS = Path(__file__).resolve().parents[3].parent / "shared" / "models"  # ../shared beside the checkout


def export_refiner(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (new or empty, or see --overwrite).", file_okay=False)],
    embedder: Annotated[str, typer.Option("--embedder", "-e", help="dlib (MIT; the one to ship), a dlib_resnet_faceapi "
                                          "folder, or an ONNX ArcFace-style embedder such as mobilefacenet.onnx (research only).")] = "dlib",
    models: Annotated[Optional[Path], typer.Option(help="Folder holding dlib_resnet_faceapi/ (default $HYPEROBF_MODELS, else ../shared/models).", file_okay=False)] = None,
    step_size: Annotated[float, typer.Option(help="η per step (default 1.5/255, the frontier's measured best; >= 1/255, one grey level).")] = DEFAULT_STEP,
    rho_pixel: Annotated[float, typer.Option(help="Per-pixel clip ρ recorded as the default (protect uses the MaskNet's own).")] = 0.03,
    default_steps: Annotated[int, typer.Option(min=0, help="K the device uses when --refine-steps is not given (10: the frontier's best under the budget, results/frontier; ~0.6 s per face on one loaded EPYC core, benchmarks/results/refine.json).")] = DEFAULT_STEPS,
    verify_faces: Annotated[Optional[Path], typer.Option(help="ImageFolder of 112² faces for the parity check (default: embedded synthetic faces).", file_okay=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a refiner already in --out.")] = False,
) -> None:
    """Export one refinement step against a frozen embedder, and the embedder, to plain ONNX (+ refiner.json)."""
    from ..refine.bundle import RefinerExportError, check_out, export_refiner as run_export
    from ..refine.embedders import load_refine_embedder

    if not 0 < step_size <= 1 or not 0 < rho_pixel <= 1:
        fail("--step-size and --rho-pixel must be in (0, 1]")
    root = models or (Path(os.environ["HYPEROBF_MODELS"]) if os.environ.get("HYPEROBF_MODELS") else _SHARED_MODELS)
    with errors_as_one_line(ValueError, FileNotFoundError, RefinerExportError):
        check_out(out, overwrite)  # before the embedder takes seconds to load
        emb = load_refine_embedder(embedder, root)
        meta = run_export(emb, out, step_size, rho_pixel, default_steps, verify_faces, overwrite=overwrite)
    p = meta["parity"]
    print(f"wrote {out}/: step.onnx, embed.onnx, refiner.json  (embedder {meta['embedder']['name']}, "
          f"licence: {meta['embedder']['licence']})")
    print(f"parity on {p['faces']} faces: gradient signs {p['sign_agreement']:.5f}, δ within 1e-5 "
          f"{p['delta_within_1e5']:.5f}, max |Δδ| {p['delta_max_abs_diff']:.2e}, embedding max diff "
          f"{p['embed_max_abs_diff']:.1e}")
