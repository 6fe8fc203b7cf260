"""`hyperobf protect`: the on-device command (onnxruntime, numpy, Pillow; no torch)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .common import errors_as_one_line, fail, progress_bar
from ..presets import PRESETS, preset_choices


def _share(s: float) -> str:
    """0.43 -> "0.43"; a scale just below 1 keeps its digits ("0.9998", never a misleading "1.00")."""
    return f"{s:.2f}" if f"{s:.2f}" != "1.00" else f"{math.floor(s * 1e4) / 1e4:.4f}"


def _dssim_text(r) -> str:  # noqa: ANN001  (a FileResult)
    """"; DSSIM written/crop 0.0044/0.0120 (scaled to 0.30), 0.0051/0.0097": per face, as written (the face
    re-aligned from the written pixels) / as the budget rule measured it (the 8-bit aligned crop); whole mode:
    the worst face-sized window of the written photo at working scale / of the 8-bit working image."""
    if not r.dssim:
        return ""
    scales = r.scales or [1.0] * len(r.dssim)
    ruled = r.budget_dssim if len(r.budget_dssim) == len(r.dssim) else [None] * len(r.dssim)
    vals = [f"{d:.4f}" + (f"/{c:.4f}" if c is not None else "") + (
        f" (scaled to {_share(s)})" if s < 1.0 else f" (scaled up ×{s:.2f}: the net's fill)" if s > 1.0 else "")
            for d, c, s in zip(r.dssim, ruled, scales)]
    what = ("written" + ("/crop" if ruled[0] is not None else "") if r.mode == "face"
            else "written" + ("/working" if ruled[0] is not None else ""))
    tail = ", worst face-sized window" if r.mode == "whole" else ""
    return f"; DSSIM {what} " + ", ".join(vals) + tail


def result_lines(r, verbose: bool = False) -> list[str]:  # noqa: ANN001  (a device_runtime FileResult)
    """One line per event of a file: its outcome, then one per note; files named relative to their input root."""
    if r.status == "protected":
        what = (f"{r.mode}, {r.faces} face(s)" if r.faces or r.mode == "face" else r.mode) + _dssim_text(r)
        line = f"protected: {r.label} -> {r.dst_label}  ({what})"
        if verbose and r.timings:
            line += "  " + "  ".join(f"{k} {v * 1000:.0f} ms" for k, v in r.timings.items())
    else:
        line = f"{'error' if r.status == 'failed' else 'skipped'}: {r.label}: {r.message}"
    return [line] + [f"note: {r.label}: {note}" for note in r.notes]


def protect(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="The user's MaskNet (.onnx / .ort).")],
    detector: Annotated[Optional[Path], typer.Option("--detector", "-d", help="SCRFD-style ONNX face detector (5 keypoints): enables face-region mode and measured working scale.")] = None,
    mode: Annotated[str, typer.Option(help="auto (face with --detector, else whole) | face | whole.")] = "auto",
    no_face: Annotated[str, typer.Option("--no-face", help="Face mode, no face found: whole (protect the whole photo) | skip.")] = "whole",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: beside each input).", file_okay=False)] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="png | jpg | webp (default: the input's).")] = None,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = 95,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    keep_metadata: Annotated[bool, typer.Option("--keep-metadata", help="Keep EXIF (GPS, serials, ...) and XMP; default strips identifying metadata.")] = False,
    manifest: Annotated[Optional[Path], typer.Option(help="manifest.jsonl: the model's sha256 must match its entry.")] = None,
    threads: Annotated[int, typer.Option(min=0, help="onnxruntime intra-op threads (0 = one per core).")] = 0,
    provider: Annotated[Optional[list[str]], typer.Option("--provider", help="Execution provider: cpu (default), cuda, coreml; repeat to list fallbacks.")] = None,
    work_size: Annotated[Optional[int], typer.Option(min=8, help="Whole mode without detected faces: shorter side (px) at which δ is computed (default 192).")] = None,
    max_pixels: Annotated[Optional[int], typer.Option(min=1, help="Refuse images above this many pixels (default 89478485, Pillow's bomb limit).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (atomically, e.g. after a new MaskNet); inputs are never written.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Add each file's time per stage to its line.")] = False,
    refiner: Annotated[Optional[Path], typer.Option("--refiner", help="Refiner folder (hyperobf export-refiner): gradient steps against its embedder after the MaskNet, on each detected face.")] = None,
    refine_steps: Annotated[Optional[int], typer.Option("--refine-steps", min=0, help="Refinement steps K per face (default: the refiner's default_steps).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help=f"DSSIM budget preset: {preset_choices()}; default mid. Each face's perturbation is scaled down until its 8-bit 112² crop is within it.")] = None,
    budget: Annotated[Optional[float], typer.Option("--budget", help="DSSIM budget as a number in (0, 1] instead of a preset.")] = None,
) -> None:
    """Protect photos with a user's MaskNet; writes <name>_protected.<ext>, never overwrites inputs.

    One line per file (path relative to the folder given) and the summary, all on standard output.
    """
    from ..device_runtime.batch import FAILED, WriteOptions, protect_files, summary
    from ..device_runtime.budget import DEFAULT_PRESET
    from ..device_runtime.detect import DetectorError, FaceDetector
    from ..device_runtime.files import DEFAULT_MAX_PIXELS
    from ..device_runtime.model import ModelError, load_model
    from ..device_runtime.protect import ProtectOptions
    from ..device_runtime.session import SessionConfig
    from ..protection import alike_line, status_line, warning_line

    with errors_as_one_line(ValueError):
        write = WriteOptions(out, fmt, quality, keep_metadata, max_pixels or DEFAULT_MAX_PIXELS, overwrite)
        if preset is not None and budget is not None:
            raise ValueError("give --preset or --budget, not both")
        options = ProtectOptions(mode=mode, no_face=no_face, work_size=work_size,
                                 budget=budget if budget is not None else (preset or DEFAULT_PRESET))
        session = SessionConfig(threads=threads, providers=tuple(provider or ("cpu",)))
    if options.mode == "face" and detector is None:
        fail("--mode face needs a face detector (--detector)")
    console = Console(highlight=False, emoji=False, soft_wrap=True)  # stdout; with markup=False a path prints as it is
    for p in session.missing_providers():
        console.print(f"note: execution provider {p!r} is not available here; using "
                      f"{', '.join(session.resolved_providers())}", markup=False)
    with errors_as_one_line(ModelError, DetectorError):
        net = load_model(model, manifest=manifest, config=session)
        det = FaceDetector(detector, session) if detector is not None else None
    if refiner is not None or refine_steps is not None:
        options = _with_refiner(options, net, refiner, refine_steps, detector is not None, session, console)
    console.print(budget_note(options, preset is None and budget is None, net.fixed_size or net.spec.input_size), markup=False)

    # The bar shares the lines' console (stdout) so they never tear it, and is off when stdout is not a terminal.
    with progress_bar(disable=not console.is_terminal, console=console) as bar:
        task = bar.add_task("protecting", total=None)

        def on_result(r) -> None:
            bar.advance(task)
            for line in result_lines(r, verbose):
                console.print(line, markup=False)

        results = protect_files(inputs, net, detector=det, options=options, write=write, recursive=recursive,
                                on_start=lambda n: bar.update(task, total=n), on_result=on_result)
    if not results:
        fail("no input images found")
    console.print(summary(results), markup=False)
    # what was measured under this budget (a preset, or a ρ that is none's), or that nothing was
    custom = options.rho if options.preset is None else None
    print(status_line(net.protection, options.preset, custom))
    for warn in (warning_line(net.protection, options.preset, custom), alike_line(net.protection)):
        if warn:
            print(warn)
    if any(r.status == FAILED for r in results):
        raise typer.Exit(1)


def budget_note(options, default: bool, size: int = 112) -> str:  # noqa: ANN001  (ProtectOptions)
    """The budget line printed before the files: which rule every written face obeys."""
    what = f"preset {options.preset} (DSSIM <= {options.rho:g})" if options.preset else f"DSSIM <= {options.rho:g}"
    how = f"default; --preset {'|'.join(PRESETS)} or --budget RHO to choose" if default else "as asked"
    return (f"note: budget {what} on each aligned {size}x{size} face (whole mode: each face-sized window); "
            f"perturbations over it are scaled down ({how})")


def _with_refiner(options, net, folder: Path | None, steps: int | None, has_detector: bool, session, console):  # noqa: ANN001
    """ProtectOptions with the refiner loaded and checked (one-line error otherwise); prints what it will do."""
    import dataclasses

    from ..device_runtime.refine import RefinedModel, RefinerError, load_refiner

    if folder is None:
        fail("--refine-steps needs --refiner")
    with errors_as_one_line(RefinerError):
        ref = load_refiner(folder, config=session)
        k = ref.default_steps if steps is None else steps
        RefinedModel(net, ref, k)  # the crop sizes must agree
    if not has_detector or options.mode == "whole":
        fail("--refiner refines detected faces: give --detector (face mode)")
    console.print(f"note: refining each face with {k} step(s) against {ref.name} (licence: {ref.licence})", markup=False)
    return dataclasses.replace(options, refiner=ref, refine_steps=k)
