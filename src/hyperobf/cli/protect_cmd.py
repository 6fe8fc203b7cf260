"""`hyperobf protect`: the on-device command (onnxruntime, numpy, Pillow; no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import errors_as_one_line, fail, progress_bar


def protect(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="The user's MaskNet (.onnx).", exists=True, dir_okay=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: beside each input).", file_okay=False)] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="png | jpg | webp (default: the input's).")] = None,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = 95,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    manifest: Annotated[Optional[Path], typer.Option(help="manifest.jsonl: the model's sha256 must match its entry.", exists=True, dir_okay=False)] = None,
    threads: Annotated[int, typer.Option(min=0, help="onnxruntime threads (0 = default).")] = 0,
    work_size: Annotated[Optional[int], typer.Option(min=16, help="Shorter side at which δ is computed (dynamic models).")] = None,
) -> None:
    """Protect photos with a user's MaskNet; writes <name>_protected.<ext>, never overwrites inputs."""
    from ..device_runtime.files import (FORMATS, InputError, collect_inputs, is_protected_name, open_image,
                                        output_path, save_atomic)
    from ..device_runtime.model import ModelError, load_model
    from ..device_runtime.protect import protect_image

    if fmt is not None and fmt.lower() not in FORMATS:
        fail(f"unknown output format {fmt!r}; choose png, jpg or webp")
    with errors_as_one_line(ModelError):
        net = load_model(model, threads=threads, manifest=manifest)
    files = collect_inputs(inputs, recursive)
    if not files:
        fail("no input images found")
    done = skipped = failed = 0
    with progress_bar() as bar:
        task = bar.add_task("protecting", total=len(files))
        for src in files:
            bar.advance(task)
            dst = output_path(src, out, fmt and fmt.lower())
            if is_protected_name(src) or dst.exists():
                skipped += 1
                continue
            try:
                img = open_image(src)
                save_atomic(protect_image(img, net, work_size), dst, quality=quality)
                done += 1
                bar.console.print(f"{src} -> {dst}")
            except (InputError, OSError, ValueError) as e:
                failed += 1
                bar.console.print(f"error: {e}")
    print(f"protected {done}, skipped {skipped}, failed {failed}")
    if failed:
        raise typer.Exit(1)
