"""`hyperobf train` (one or several structures) and `hyperobf protection-check`.

torch is imported inside the commands so the CLI stays importable without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..spec import BUILTIN, builtin_spec, flops
from .common import command_line, errors_as_one_line, fail, parse_sets, progress_bar

_BAD_INPUT = (ValueError, FileNotFoundError, PermissionError, OSError)
# Each builtin structure with its cost (spec.flops at 112², torch-free), for --structure's help.
_STRUCTURES = ", ".join(f"{n} ({flops(builtin_spec(n)) / 1e9:.2f})" for n in BUILTIN)


def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoint.pt, config.json, metrics.jsonl); "
                                      "with several --structures one sub-folder per structure.", file_okay=False)],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config (configs/*.toml).", exists=True, dir_okay=False)] = None,
    data: Annotated[Optional[Path], typer.Option(help="ImageFolder face directory (default: embedded synthetic set).", exists=True, file_okay=False)] = None,
    structure: Annotated[Optional[str], typer.Option(help=f"MaskNet structure: {_STRUCTURES} "
                                                     "(GFLOP per 112² face; `hyperobf structures` for more).")] = None,
    structures: Annotated[Optional[str], typer.Option(help="Several structures, comma-separated (e.g. A,B,C,D): one HyperNet each, in OUT/<structure>/.")] = None,
    method: Annotated[Optional[str], typer.Option(help="hypernet | static | ensemble | mcdropout.")] = None,
    objective: Annotated[Optional[str], typer.Option(help="auto (default: feature when --embedder is given, else adversarial) | adversarial (old name: classifier) | thesis (the thesis's error-minimising J1) | feature.")] = None,
    feature_mode: Annotated[Optional[str], typer.Option(help="untargeted (default) | targeted | centroid (needs --set pool_users=N) (feature objective).")] = None,
    embedder: Annotated[Optional[Path], typer.Option(help="ONNX face embedder (feature objective).", exists=True, dir_okay=False)] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Training epochs (default: the config's).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (CUDA when available) | cpu | cuda.  [default: auto]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of data order, initialisation and latents (default: the config's).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any config key: --set lambda_div=30 (repeatable).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue from this checkpoint (single structure).", exists=True, dir_okay=False)] = None,
) -> None:
    """Train a HyperNet (or a baseline) and write a checkpoint with spec + config + state."""
    from ..train.config import TrainConfig
    from ..train.loop import train as run_train

    if structure and structures:
        fail("give --structure or --structures, not both")
    names = [s.strip() for s in structures.split(",") if s.strip()] if structures else [None]
    if resume and len(names) > 1:
        fail("--resume continues one run: use --structure")
    with errors_as_one_line(*_BAD_INPUT):
        overrides = parse_sets(set_ or [])
        overrides.update({k: v for k, v in dict(
            data=str(data) if data else None, structure=structure, method=method, objective=objective,
            feature_mode=feature_mode, embedder=str(embedder) if embedder else None, epochs=epochs,
            device=device, seed=seed).items() if v is not None})
        cfgs = []
        for name in names:  # validate every config before training any
            o = dict(overrides, **({"structure": name} if name else {}))
            cfgs.append(TrainConfig.from_toml(config, **o) if config else TrainConfig.from_dict(o))
        for cfg, name in zip(cfgs, names):
            run_out = out / cfg.structure if name else out
            with progress_bar() as bar:
                task = bar.add_task(f"training {cfg.method} {cfg.structure} ({cfg.objective})", total=cfg.epochs)
                result = run_train(cfg, run_out, resume=resume, progress=lambda e, n: bar.update(task, completed=e))
            if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
                continue
            if not result.metrics:
                print(f"checkpoint: {result.checkpoint} (nothing to train: already at epoch {cfg.epochs})")
                continue
            last = result.metrics[-1]
            h = last["holdout"]
            feat = f"  feature cos {h['feat_cos_mean']:.4f}" if "feat_cos_mean" in h else ""
            feat += f"  δ cos between nets {h['delta_cos']:.3f}" if "delta_cos" in h else ""
            print(f"checkpoint: {result.checkpoint}")
            print(f"epoch {last['epoch']}: J1 {last['J1']:.4f}  J2 {last['J2']:.4f}  param_var {h['param_var']:.4g}  "
                  f"KL {h['kl_gaussian']:.3g}  held-out DSSIM mean {h['dssim_mean']:.4f} max {h['dssim_max']:.4f}  "
                  f"PSNR {h['psnr_mean']:.2f} dB{feat}  ({result.seconds:.1f} s)")


def protection_check(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Trained checkpoint.pt.", exists=True, dir_okay=False)],
    data: Annotated[Path, typer.Option(help="ImageFolder faces (the training folder, for seen + unseen identities).", exists=True, file_okay=False)],
    embedder: Annotated[Path, typer.Option(help="ONNX face embedder the attacker uses.", exists=True, dir_okay=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the report here as JSON.", dir_okay=False)] = None,
    max_identities: Annotated[int, typer.Option(min=0, help="0 = every identity in the folder.")] = 0,
    max_query: Annotated[int, typer.Option(min=1, help="Query images per identity.")] = 20,
    max_gallery: Annotated[int, typer.Option(min=1, help="Clean gallery images per identity.")] = 40,
    jpeg: Annotated[Optional[str], typer.Option(help="Also attack after a real JPEG round trip at these qualities, e.g. 75,90.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the identity split and the users' latents.")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA when available) | cpu | cuda.")] = "auto",
    record: Annotated[bool, typer.Option("--record/--no-record", help="Write the result into the checkpoint's "
                                         "protection record (export copies it into every model).")] = True,
) -> None:
    """Nearest-centroid attack with a frozen embedder: accuracy on clean vs protected faces, feature cosine, DSSIM."""
    from ..devices import pick_device
    from ..protection import status_line, warning_line
    from ..train.checkpoint import record_protection
    from ..train.protection_check import protection_check as run_check, record_entries

    with errors_as_one_line(*_BAD_INPUT):
        qualities = tuple(int(q) for q in jpeg.split(",") if q.strip()) if jpeg else ()
        if any(not 1 <= q <= 100 for q in qualities):
            raise ValueError("--jpeg qualities must be in 1..100")
        if out and out.exists() and out.is_dir():
            raise ValueError(f"--out is a directory: {out}")
        report = run_check(checkpoint, data, embedder, max_identities=max_identities, max_query=max_query,
                           max_gallery=max_gallery, seed=seed, jpeg_quality=qualities, device=str(pick_device(device)))
        if out:
            tmp = out.with_name(f".{out.name}.tmp")
            tmp.write_text(json.dumps(report, indent=2))
            tmp.replace(out)
        rec = record_protection(checkpoint, record_entries(report, data, embedder, command_line())) if record else None
    print(f"{report['method']} {report['structure']} ({report['objective']}), {report['identities']} identities, "
          f"{report['query_images']} queries")
    for name, g in report["groups"].items():
        extra = "".join(f"  jpeg{k[len('acc_protected_jpeg'):]} {v:.3f}" for k, v in g.items() if k.startswith("acc_protected_jpeg"))
        print(f"  {name:6s} n={g['queries']:4d}  acc clean {g['acc_clean']:.3f} -> protected {g['acc_protected']:.3f}{extra}  "
              f"cos {g['cos_mean']:.4f} (min {g['cos_min']:.4f})  DSSIM {g['dssim_mean']:.4f} (max {g['dssim_max']:.4f})  "
              f"PSNR {g['psnr_mean']:.2f} dB")
        if "anchor_cos_protected" in g:  # targeted: did the faces move toward their user's anchor identity?
            print(f"  {'':6s} anchor cos {g['anchor_cos_clean']:.4f} -> {g['anchor_cos_protected']:.4f}  "
                  f"labelled as the anchor {g['to_anchor']:.3f}")
    if rec is not None:
        print(f"recorded in {checkpoint}: {status_line(rec)}")
        warn = warning_line(rec)
        if warn:
            print(warn)

