"""`hyperobf eval e1 … e8 | all`: reproduce the thesis's experiments on real faces (issue 6).

Data and models are taken from arguments (or HYPEROBF_FACES / HYPEROBF_MODELS), never from the
repository. torch is imported inside the commands.
"""

from __future__ import annotations

import json
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


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise ValueError(f"{what}: give at least one value")
    return vals


@eval_app.command("frontier")
def frontier(
    rho: Annotated[str, typer.Option(help="DSSIM budgets, comma-separated.")] = "0.007,0.012,0.017",
    checkpoint: Annotated[Optional[list[Path]], typer.Option("--checkpoint", help="Trained PSP checkpoint whose per-user nets are measured (repeatable).", exists=True, dir_okay=False)] = None,
    scale: Annotated[str, typer.Option(help="tiny | reduced | full: the CelebA split (targets, distractors).")] = "reduced",
    targets: Annotated[Optional[int], typer.Option(min=1, help="Target users (default: the scale's).")] = None,
    uploads: Annotated[int, typer.Option(min=1, help="Protected uploads per target user.")] = 10,
    limit: Annotated[str, typer.Option(help="Per-image limit modes: untargeted,targeted (against the white-box embedder), errmin (error-minimising noise against a surrogate with the from-scratch ResNet's recipe), or 'none'.")] = "untargeted,targeted",
    limit_steps: Annotated[int, typer.Option(min=1, help="Adam steps of the limit's first run (then doubled with a restart).")] = 100,
    limit_max_steps: Annotated[int, typer.Option(min=1, help="Cap of the stopping rule.")] = 400,
    limit_tol: Annotated[float, typer.Option(min=0.0, help="Stop doubling when identification moves less than this.")] = 0.02,
    limit_lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate of the limit (on w, δ = ρ_pixel·tanh(w)).")] = 0.05,
    fill_budget: Annotated[float, typer.Option(min=0.0, help="Also a 'filled' row per net: its δ scaled up by at most this factor until it uses the budget ρ (0 = off).")] = 0.0,
    errmin_rounds: Annotated[int, typer.Option(min=1, help="errmin limit: min–min turns at most (it stops when its surrogate classifies 99% of the perturbed uploads and of the distractors).")] = 25,
    errmin_train_steps: Annotated[int, typer.Option(min=1, help="errmin limit: its surrogate's training steps per turn.")] = 10,
    errmin_decay: Annotated[bool, typer.Option("--errmin-decay", help="errmin limit: anneal its surrogate's learning rate (cosine, to a tenth over --errmin-rounds turns).")] = False,
    hybrid_k: Annotated[str, typer.Option(help="Hybrid: on-device refinement steps after the net (0 = none).")] = "0,5,10,25",
    hybrid_embedder: Annotated[str, typer.Option(help="Embedder the device refines against: dlib (MIT, shippable) | mobilefacenet.")] = "dlib",
    whitebox: Annotated[str, typer.Option(help="Embedder the per-image limit optimises against: mobilefacenet | dlib | both (ensemble); the others are black boxes.")] = "mobilefacenet",
    resnet: Annotated[bool, typer.Option("--resnet", help="Also attack with a ResNet-18 pre-trained on the public faces and fine-tuned on the uploads (slow on a CPU).")] = False,
    resnet_scratch: Annotated[bool, typer.Option("--resnet-scratch", help="Also attack with a ResNet-18 trained from scratch on the uploads (slow on a CPU).")] = False,
    resnet_rho: Annotated[Optional[str], typer.Option(help="Budgets at which the ResNets attack (default: every --rho).")] = None,
    resnet_on: Annotated[str, typer.Option(help="Row kinds the ResNets attack, comma-separated: clean, net, filled, inverted, hybrid, limit (default: all). Lets two processes share one table's costly rows.")] = "all",
    counters: Annotated[str, typer.Option(help="Counters the embedders' attackers also apply to the protected uploads first, comma-separated: jpeg75, resize50, gray+jpeg10, blur (or 'none').")] = "none",
    resnet_counters: Annotated[str, typer.Option(help="One ResNet attacker per entry, comma-separated: none (plain) or a counter name (it squeezes every image it trains and queries on through it, e.g. gray+jpeg10); each costs a ResNet training per row.")] = "none",
    scale_set: Annotated[Optional[list[str]], typer.Option("--scale-set", help="Override a setting of the scale, key=value (repeatable), e.g. fr_epochs=30 fr_onecycle=true fr_shift=8 (a stronger ResNet attacker); recorded in the result.")] = None,
    inversion: Annotated[str, typer.Option(help="Inversion attacker (E3/E4): how many nets of the same HyperNet it holds, comma-separated, e.g. 1,2,3 (or 'none'); at the ResNets' budgets; with --hybrid-k K > 0 also for the hybrid (the held nets run with the same K device steps).")] = "none",
    record: Annotated[bool, typer.Option("--record/--no-record", help="Write each net's as-issued numbers into its checkpoint's protection record.")] = True,
    faces: Annotated[Optional[Path], typer.Option(help="Faces root (default ../shared/data/faces).", file_okay=False)] = None,
    models: Annotated[Optional[Path], typer.Option(help="Models root (default ../shared/models).", file_okay=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder.", file_okay=False)] = Path("results/frontier"),
    seed: Annotated[int, typer.Option(help="Seed of the split, the users' z and the limit's starts.")] = 0,
    holdout_users: Annotated[bool, typer.Option("--holdout-users", help="Measure on validation users (the seed's test users set aside) to choose among trained nets; never recorded.")] = False,
    device: Annotated[str, typer.Option(help=_DEVICE_HELP)] = "auto",
    threads: Annotated[int, typer.Option(min=0, help="CPU threads (0 = default).")] = 0,
    include: Annotated[Optional[list[Path]], typer.Option("--include", help="frontier.json of an earlier run on the same split, uploads and attackers: its rows join this table (repeatable; each row keeps its source).", exists=True, dir_okay=False)] = None,
) -> None:
    """Budget–protection frontier: per-user nets vs the per-image limit vs the hybrid, every attacker (issue 12)."""
    from ..cli.common import command_line
    from ..eval.context import EvalContext
    from ..eval.frontier import FrontierConfig, run_frontier
    from ..eval.frontier_join import merge_rows, write_outputs
    from ..eval.frontier_record import record_nets
    from ..eval.scales import get_scale

    faces = faces or _default("HYPEROBF_FACES", "data/faces")
    models = models or _default("HYPEROBF_MODELS", "models")
    if not faces.is_dir():
        fail(f"faces root not found: {faces} (pass --faces or set HYPEROBF_FACES)")
    if not models.is_dir():
        fail(f"models root not found: {models} (pass --models or set HYPEROBF_MODELS)")
    with errors_as_one_line(ValueError, FileNotFoundError, PermissionError, OSError):
        rhos = _floats(rho, "--rho")
        if any(not 0 < r < 1 for r in rhos):
            raise ValueError("--rho values must be in (0, 1)")
        modes = () if limit.strip() == "none" else tuple(m.strip() for m in limit.split(",") if m.strip())
        if any(m not in ("untargeted", "targeted", "errmin") for m in modes):
            raise ValueError("--limit: untargeted, targeted, errmin or none")
        ks = tuple(int(k) for k in _floats(hybrid_k, "--hybrid-k"))
        if any(k < 0 for k in ks):
            raise ValueError("--hybrid-k values must be >= 0")
        if hybrid_embedder not in ("dlib", "mobilefacenet"):
            raise ValueError("--hybrid-embedder: dlib or mobilefacenet")
        if whitebox not in ("mobilefacenet", "dlib", "both"):
            raise ValueError("--whitebox: mobilefacenet, dlib or both")
        from ..eval.counters import get_counter

        counter_names = () if counters.strip() == "none" else tuple(c.strip() for c in counters.split(",") if c.strip())
        resnet_counter_names = tuple(c.strip() for c in resnet_counters.split(",") if c.strip())
        if not resnet_counter_names:
            raise ValueError("--resnet-counters: give none or counter names")
        for c in counter_names + tuple(c for c in resnet_counter_names if c != "none"):
            get_counter(c)  # unknown names fail here, before any attacker is trained
        from ..eval.frontier import ROW_KINDS

        kinds = () if resnet_on.strip() == "all" else tuple(k.strip() for k in resnet_on.split(",") if k.strip())
        if any(k not in ROW_KINDS for k in kinds):
            raise ValueError(f"--resnet-on: choose from {', '.join(ROW_KINDS)} (or all)")
        held = () if inversion.strip() == "none" else tuple(int(v) for v in _floats(inversion, "--inversion"))
        if any(n < 1 for n in held):
            raise ValueError("--inversion: held-net counts must be >= 1")
        if held and not checkpoint:
            raise ValueError("--inversion needs a --checkpoint (it inverts that HyperNet's nets)")
        if threads:
            import torch

            torch.set_num_threads(threads)
        cfg = FrontierConfig(counters=counter_names, resnet_counters=resnet_counter_names, inversion=held, resnet_on=kinds, rhos=rhos, uploads=uploads, checkpoints=tuple(str(c) for c in checkpoint or ()),
                             limit_modes=modes, limit_steps=limit_steps, limit_max_steps=limit_max_steps,
                             limit_tol=limit_tol, limit_lr=limit_lr, errmin_rounds=errmin_rounds, errmin_train_steps=errmin_train_steps, errmin_decay=errmin_decay, fill_budget=fill_budget, hybrid_k=ks if checkpoint else (), hybrid_embedder=hybrid_embedder,
                             resnet=resnet, resnet_scratch=resnet_scratch, seed=seed, whitebox=whitebox,
                             resnet_rhos=_floats(resnet_rho, "--resnet-rho") if resnet_rho else ())
        scale_overrides = parse_sets(scale_set or [])
        sc = get_scale(scale, **{**scale_overrides, **({"n_targets": targets} if targets else {})})
        ctx = EvalContext(sc, faces, models, out, seed, device, threads=threads, holdout=holdout_users)
        result = run_frontier(ctx, cfg, log=lambda m: print(m, flush=True))
        result["command"] = command_line()
        result["scale"] = sc.name
        result["scale_overrides"] = scale_overrides
        result["split"] = ctx.split
        for path in include or ():
            merge_rows(result, json.loads(path.read_text()), str(path))
        paths = write_outputs(result, out)
        if record:
            for line in record_nets(result, faces, command_line()):
                print(line)
    print("wrote " + ", ".join(str(p) for p in paths))


@eval_app.command("frontier-join")
def frontier_join(
    runs: Annotated[list[Path], typer.Argument(help="frontier.json files of runs on the same split and uploads; the first one's clean row heads the table.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder of the joined table.", file_okay=False)],
    record: Annotated[bool, typer.Option("--record", help="Write the joined table's as-issued and preset rows into their checkpoints' protection records (each with the command of the run that measured it), as `eval frontier` does.")] = False,
) -> None:
    """One frontier table from runs that split its costly rows between processes (see --resnet-on)."""
    from ..cli.common import command_line
    from ..eval.frontier_join import merge_rows, write_outputs
    from ..eval.frontier_record import record_nets

    with errors_as_one_line(ValueError, FileNotFoundError, PermissionError, OSError, json.JSONDecodeError, KeyError):
        result = json.loads(runs[0].read_text())
        for path in runs[1:]:
            merge_rows(result, json.loads(path.read_text()), str(path))
        paths = write_outputs(result, out)
        lines = record_nets(result, Path(result["split"]["faces_root"]), result.get("command") or command_line()) \
            if record else []
    print("wrote " + ", ".join(str(p) for p in paths))
    for line in lines:
        print(line)


@eval_app.command("frontier-select")
def frontier_select(
    run: Annotated[Path, typer.Argument(help="frontier.json of a run with --holdout-users and several --checkpoint.", exists=True, dir_okay=False)],
    rho: Annotated[float, typer.Option(help="The budget at which the nets are compared.")] = 0.025,
    attacker: Annotated[str, typer.Option(help="Attacker/protocol key that decides, as in the table.")] = "resnet18-scratch/gallery",
) -> None:
    """Which trained net to issue from: the ranking on held-out validation users (never the test users)."""
    from ..eval.frontier_select import rank_nets

    with errors_as_one_line(ValueError, OSError, json.JSONDecodeError, KeyError):
        ranked = rank_nets(json.loads(run.read_text()), attacker, rho)
    print(f"held-out users, {attacker} at rho {rho:g} (lower protects more):")
    for i, r in enumerate(ranked):
        print(f"  {i + 1}. {r['protector']}: {r['mean']:.2f} ± {r['sd']:.2f} (mean DSSIM {r['dssim_mean']:.4f})  {r['checkpoint']}")
    print(f"chosen: {ranked[0]['checkpoint']}")


@eval_app.command("frontier-compare")
def frontier_compare(
    runs: Annotated[list[Path], typer.Argument(help="frontier.json files (any splits, held-out users too); users pair across runs on the same split.", exists=True, dir_okay=False)],
    a: Annotated[list[str], typer.Option("--a", help="Rows of method A: a protector label or glob, e.g. 'net:thesis_users_*_D36 inverted (1 held*' (repeat to pool; its value on a user is the rows' mean).")],
    b: Annotated[list[str], typer.Option("--b", help="Rows of method B, as --a.")],
    attacker: Annotated[str, typer.Option(help="Attacker/protocol key, as in the table.")] = "resnet18-scratch/gallery",
    rho: Annotated[Optional[float], typer.Option(help="Only rows at this budget (default: any).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the comparison as JSON here.", dir_okay=False)] = None,
) -> None:
    """Is A's protection below B's? Paired per user over the runs' users: mean difference, bootstrap interval, sign test."""
    from ..eval.frontier_compare import compare, compare_md

    with errors_as_one_line(ValueError, OSError, json.JSONDecodeError, KeyError, TypeError):
        c = compare([(str(p), json.loads(p.read_text())) for p in runs], a, b, attacker, rho)
        if json_out is not None:
            tmp = json_out.with_name(json_out.name + ".tmp")
            tmp.write_text(json.dumps(c, indent=2))
            tmp.replace(json_out)
    print(compare_md(c))


@eval_app.command("alike")
def alike(
    checkpoints: Annotated[list[Path], typer.Argument(help="Trained checkpoint.pt files.", exists=True, dir_okay=False)],
    faces: Annotated[Path, typer.Option("--faces", help="Folder of face images (searched recursively; 112² crops).", exists=True, file_okay=False)],
    nets: Annotated[int, typer.Option(min=2, help="Fresh users' nets issued per checkpoint (a few dozen: a HyperNet may give one δ to most users and another to a few, which 8 nets can miss).")] = 32,
    images: Annotated[int, typer.Option(min=1, help="Faces, evenly spaced over the folder's sorted files.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the users' latents.")] = 0,
) -> None:
    """How alike each checkpoint's per-user nets are in what they output (δ cos, identical pairs) vs their weights."""
    from ..eval.alike import checkpoint_similarity
    from ..train.data import IMAGE_SUFFIXES, load_files

    with errors_as_one_line(ValueError, OSError):
        files = sorted(p for p in faces.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"no images under {faces}")
        step = max(1, len(files) // images)
        x = load_files(files[::step][:images]).float() / 255.0  # (b, 3, 112, 112)
        rows = [(ck, checkpoint_similarity(ck, x, nets, seed)) for ck in checkpoints]
    print(f"{len(x)} faces from {faces}, {nets} nets per checkpoint (δ cos 1 and every pair identical: one "
          "perturbation for every user)")
    for ck, r in rows:
        print(f"  {ck}: δ cos {r['delta_cos']:.3f}, identical pairs {r['identical_pairs']:.2f}, one δ for "
              f"{r['largest_group']:.0%} of the nets (δ cos >= 0.99), param_var {r['param_var']:.4g}, saturation "
              f"{r['saturation']:.2f} (mean (δ/ρ_pixel)²; 1: sign patterns)")
