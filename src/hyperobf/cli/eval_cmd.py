"""`hyperobf eval e1 … e8 | all`: reproduce the thesis's experiments on real faces (issue 6).

Data and models are taken from arguments (or HYPEROBF_FACES / HYPEROBF_MODELS), never from the
repository. torch is imported inside the commands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import errors_as_one_line, fail, parse_sets

eval_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="Evaluation harness: experiments E1–E8 of the thesis (FR attacks, inversion, diversity).")

_DEFAULT_SHARED = Path(__file__).resolve().parents[3].parent / "shared"  # ../shared beside the checkout
_TITLES = {
    "e1": "static system: original / protected / restored (Fig 5.1)",
    "e2": "protection without attack per target user (Table 5.1)",
    "e3": "10x10 mix-inversion: HyperNet vs ensemble vs MC-dropout (Fig 5.3, Table 5.2)",
    "e4": "attacker holding 1 / 2 / 3 MaskNets (Table 5.3)",
    "e5": "three HyperNets, cross-structure inversion (Fig 5.8)",
    "e6": "diversity: KL between nets, lambda x alpha grid, epoch sweep (§5.3)",
    "e7": "upload robustness: JPEG q75/q90 and resizing",
    "e8": "adaptive attacker (FR trained with protected + restored images)",
}


_PSP_SET_HELP = ("Training config key for every PSP training, e.g. --psp-set objective=feature --psp-set structure=D "
                 "(repeatable; the feature objective's embedder defaults to MODELS/mobilefacenet.onnx).")


_FACES_HELP = "Faces root holding glint24/, celeba299/ … (default $HYPEROBF_FACES or ../shared/data/faces)."
_MODELS_HELP = "Models root: mobilefacenet.onnx, dlib_resnet_faceapi/ (default $HYPEROBF_MODELS or ../shared/models)."
_OUT_HELP = "Results folder (default results/<scale>-<device>)."
_SEED_HELP = "Seed of the split and of every training."
_DEVICE_HELP = "auto (CUDA when available) | cpu | cuda."
_QUIET_HELP = "Print only the report's path, not each step."


def _default(env: str, sub: str) -> Path:
    return Path(os.environ[env]) if os.environ.get(env) else (_DEFAULT_SHARED / sub).resolve()


def _run(names: list[str], scale: str, faces: Optional[Path], models: Optional[Path], out: Optional[Path], seed: int,
         device: str, psp_source: str, fr_source: str, public_source: str, quiet: bool, deadline_s: float = 0.0,
         threads: int = 0, psp_set: Optional[list[str]] = None) -> None:
    from ..eval.runner import run
    from ..eval.scales import get_scale
    from ..train.config import TrainConfig

    faces = faces or _default("HYPEROBF_FACES", "data/faces")
    models = models or _default("HYPEROBF_MODELS", "models")
    if not faces.is_dir():
        fail(f"faces root not found: {faces} (pass --faces or set HYPEROBF_FACES)")
    out = out or Path("results") / f"{scale}-{device}"
    with errors_as_one_line(ValueError, FileNotFoundError, PermissionError, OSError):
        overrides = parse_sets(psp_set or [])
        TrainConfig.from_dict(dict(overrides, embedder=overrides.get("embedder", "x")))  # unknown keys fail now
        if "embedder" not in overrides and overrides.get("objective") == "feature" and models.is_dir():
            overrides["embedder"] = str(models / "mobilefacenet.onnx")
        summaries, failures = run(names, get_scale(scale), faces, models if models.is_dir() else None, out, seed,
                                  device, {"psp": psp_source, "fr": fr_source, "public": public_source},
                                  log=(lambda *_: None) if quiet else (lambda m: print(m, flush=True)),
                                  deadline_s=deadline_s, threads=threads, psp_overrides=overrides)
    print(f"wrote {out / 'report.md'}")
    if failures:
        fail("; ".join(failures))


def _make(name: str):
    def cmd(
        scale: Annotated[str, typer.Option(help="tiny | reduced | full.")] = "tiny",
        faces: Annotated[Optional[Path], typer.Option(help=_FACES_HELP, file_okay=False)] = None,
        models: Annotated[Optional[Path], typer.Option(help=_MODELS_HELP, file_okay=False)] = None,
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help=_OUT_HELP, file_okay=False)] = None,
        seed: Annotated[int, typer.Option(help=_SEED_HELP)] = 0,
        device: Annotated[str, typer.Option(help=_DEVICE_HELP)] = "auto",
        psp_source: Annotated[str, typer.Option(help="Folder of the PSP's HyperNet training faces.")] = "glint24",
        fr_source: Annotated[str, typer.Option(help="Folder of the FR evaluation set (distractors + targets).")] = "celeba299",
        public_source: Annotated[str, typer.Option(help="Folder of the attacker's public faces (leftover ids if = fr-source).")] = "celeba299",
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help=_QUIET_HELP)] = False,
        threads: Annotated[int, typer.Option(min=0, help="CPU threads (0 = default; 1 is fastest on a busy machine).")] = 0,
        psp_set: Annotated[Optional[list[str]], typer.Option("--psp-set", help=_PSP_SET_HELP)] = None,
    ) -> None:
        names = list(_TITLES) if name == "all" else [n.strip() for n in name.split(",")]
        _run(names, scale, faces, models, out, seed, device, psp_source, fr_source, public_source, quiet, 0.0, threads,
             psp_set)

    cmd.__doc__ = _TITLES.get(name, "Run E1–E8 in one process (shared nets and attackers).")
    return cmd


for _n in list(_TITLES) + ["all"]:
    eval_app.command(_n)(_make(_n))


@eval_app.command("run")
def run_some(
    experiments: Annotated[str, typer.Argument(help="Comma-separated, e.g. e1,e2,e3,e4,e7.")],
    scale: Annotated[str, typer.Option(help="tiny | reduced | full.")] = "tiny",
    faces: Annotated[Optional[Path], typer.Option(help=_FACES_HELP, file_okay=False)] = None,
    models: Annotated[Optional[Path], typer.Option(help=_MODELS_HELP, file_okay=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help=_OUT_HELP, file_okay=False)] = None,
    seed: Annotated[int, typer.Option(help=_SEED_HELP)] = 0,
    device: Annotated[str, typer.Option(help=_DEVICE_HELP)] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=_QUIET_HELP)] = False,
    deadline_s: Annotated[float, typer.Option(help="Start no experiment after this many seconds (0 = no limit).")] = 0.0,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads (0 = default; 1 is fastest on a busy machine).")] = 0,
    psp_set: Annotated[Optional[list[str]], typer.Option("--psp-set", help=_PSP_SET_HELP)] = None,
) -> None:
    """Several experiments in one process, sharing trained nets and attackers."""
    names = [n.strip() for n in experiments.split(",") if n.strip()]
    _run(names, scale, faces, models, out, seed, device, "glint24", "celeba299", "celeba299", quiet, deadline_s, threads,
         psp_set)
