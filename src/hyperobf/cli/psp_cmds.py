"""PSP-side commands: train, demo (torch is imported inside each command; export is in export_cmd)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import errors_as_one_line, progress_bar

_BAD_INPUT = (ValueError, FileNotFoundError, PermissionError, OSError)


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the demo's files.", file_okay=False)] = Path("hyperobf-demo"),
    data: Annotated[Optional[Path], typer.Option(help="Real faces (ImageFolder); default: embedded sample images.", exists=True, file_okay=False)] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs of the tiny HyperNet.")] = 3,
) -> None:
    """Train a tiny HyperNet, export 3 users' MaskNets, protect a sample photo; print what it wrote."""
    import numpy as np
    from PIL import Image

    from ..device_runtime import load_model, protect_image
    from ..export.issue import issue_users
    from ..train.checkpoint import load_checkpoint
    from ..train.config import TrainConfig
    from ..train.loop import train as run_train
    from ..protection import status_line
    from .quality import image_quality

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = TrainConfig(structure="A", epochs=epochs, batch_images=8, nets_per_step=4,
                      data=str(data) if data else "", max_per_identity=40 if data else 0, max_identities=8 if data else 0)
    with errors_as_one_line(*_BAD_INPUT):
        with progress_bar() as bar:
            task = bar.add_task("training tiny HyperNet (structure A)", total=cfg.epochs)
            result = run_train(cfg, out / "run", progress=lambda e, n: bar.update(task, completed=e))
        t_train = time.perf_counter()
        report = issue_users(load_checkpoint(result.checkpoint), 3, out / "models", overwrite=True)
        t_export = time.perf_counter()
        if data:
            photo_path = sorted(p for p in sorted(data.iterdir())[0].iterdir() if p.is_file())[0]
            photo = Image.open(photo_path).convert("RGB")
        else:
            from skimage import data as skdata

            photo = Image.fromarray(skdata.astronaut())
            photo_path = out / "astronaut.png"
            photo.save(photo_path)
        model = load_model(out / "models" / "user0001.onnx")
        t1 = time.perf_counter()
        protected = protect_image(photo, model)
        t_protect = time.perf_counter() - t1
        dst = out / f"{Path(photo_path).stem}_protected.png"
        protected.save(dst)
    q = image_quality(np.asarray(photo), np.asarray(protected))
    last = result.metrics[-1]
    print(f"trained   {result.checkpoint}  ({t_train - t0:.1f} s, {cfg.epochs} epochs; "
          f"held-out DSSIM {last['holdout']['dssim_mean']:.4f}, J1 {last['J1']:.3f}, J2 {last['J2']:.3f})")
    print(f"exported  3 MaskNets -> {out / 'models'}  ({t_export - t_train:.2f} s, verified max |onnx - torch| "
          f"{report.verified['onnx']['max_abs_diff']:.2e})")
    print(f"protected {photo_path} -> {dst}  ({protected.size[0]}x{protected.size[1]}, {t_protect * 1000:.1f} ms)")
    print(f"quality   DSSIM {q['dssim']:.4f}  SSIM {q['ssim']:.4f}  PSNR {q['psnr']:.2f} dB  max|δ| {q['max_abs_delta']:.4f}")
    print(f"status    {status_line(model.protection)}")  # a demo net protects nobody: say what was measured
    print(f"total     {time.perf_counter() - t0:.1f} s")
