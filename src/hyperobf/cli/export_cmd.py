"""`hyperobf export`: issue per-user MaskNets from a checkpoint in every requested format
(torch, onnx and coremltools are imported inside the command)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..model_formats import FORMATS, PRECISIONS, SHAPES, parse_list
from ..protection import alike_line
from .common import errors_as_one_line, fail, progress_bar

_FORMAT_HELP = "Comma-separated formats: " + ", ".join(f"{r.name} ({r.suffix})" for r in FORMATS.values()) + "."


def export(
    checkpoint: Annotated[list[Path], typer.Option("--checkpoint", help="Trained checkpoint.pt; repeat it with one "
                                                   "checkpoint per structure to give each user a structure drawn at "
                                                   "random (OUT/<structure>/ + one manifest).", dir_okay=False)],
    users: Annotated[int, typer.Option("--users", "-n", help="Number of users to issue MaskNets for.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (new or empty, or see --overwrite).", file_okay=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help=_FORMAT_HELP)] = "onnx",
    precision: Annotated[str, typer.Option(help=f"Comma-separated precisions: {', '.join(PRECISIONS)} "
                                                "(each format exports those it supports).")] = "fp32",
    shape: Annotated[str, typer.Option(help="fixed (1x3x112x112, mobile) | dynamic (N x 3 x H x W).")] = "fixed",
    verify: Annotated[str, typer.Option(help="sample (3 users fully verified; every file read back) | all | none.")] = "sample",
    verify_faces: Annotated[Optional[Path], typer.Option(help="ImageFolder of real faces to verify on "
                                                         "(default: embedded synthetic faces).", file_okay=False)] = None,
    seeds_file: Annotated[Optional[Path], typer.Option(help="Keep users' secret z here (mode 0600) for re-issue.", dir_okay=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace files of a previous export in --out.")] = False,
    chunk: Annotated[int, typer.Option(min=1, help="Users generated and written per batch.")] = 256,
) -> None:
    """Issue per-user MaskNets: one model file per user, format and precision, plus manifest.jsonl."""
    if users < 1:
        fail("--users must be >= 1")
    with errors_as_one_line(ValueError):
        formats = parse_list(fmt, tuple(FORMATS), "format")
        precisions = parse_list(precision, PRECISIONS, "precision")
    if shape not in SHAPES:
        fail("--shape must be 'fixed' or 'dynamic'")
    if verify not in ("sample", "all", "none"):
        fail("--verify must be sample, all or none")
    for c in checkpoint:
        if not c.is_file():
            fail(f"checkpoint not found: {c}")
    if verify_faces is not None and not verify_faces.is_dir():
        fail(f"--verify-faces folder not found: {verify_faces}")
    if overwrite and len(checkpoint) > 1:
        fail("--overwrite is not supported with several checkpoints; use a new folder")
    from ..export.issue import issue_users
    from ..export.multi_structure import issue_structures
    from ..train.checkpoint import load_checkpoint

    with errors_as_one_line(ValueError, OSError, RuntimeError, AssertionError):
        loaded = [load_checkpoint(c) for c in checkpoint]
        kw = dict(formats=formats, precisions=precisions, shape=shape, verify=verify, verify_faces=verify_faces,
                  chunk=chunk)
        if len(loaded) == 1:
            with progress_bar() as bar:
                task = bar.add_task(f"exporting {', '.join(formats)}", total=users)
                reports = {"": issue_users(loaded[0], users, out, seeds_file=seeds_file, overwrite=overwrite,
                                           progress=lambda done, total: bar.update(task, completed=done), **kw)}
        else:
            reports = issue_structures(loaded, users, out, seeds_file=seeds_file, **kw)
    for name, report in reports.items():
        if name:
            print(f"structure {name}: {report.n_users} users")
        _print_report(report)


def _print_report(report) -> None:
    s = report.seconds
    print(f"wrote {report.files} model files for {report.n_users} users + {report.manifest} in {s['total']:.2f} s "
          f"({report.files / max(s['total'], 1e-9):.0f} files/s; generate {s['generate']:.2f} s, "
          f"templates {s['templates']:.2f} s, render {s['render']:.2f} s, write wait {s['write_wait']:.2f} s, "
          f"verify {s['verify']:.2f} s on its own thread)")
    print(f"{'variant':<12} {'files':>6} {'MB':>8} {'checked':>7} {'max|Δ| vs torch':>15} {'δ err':>7} "
          f"{'DSSIM vs fp32':>13}  notes")
    for job in report.jobs:
        v = report.verified.get(job["label"], {})
        notes = []
        if "prediction" in v:
            notes.append(f"prediction {v['prediction']}; δ by {v['runtime']}")
        mu = v.get("mobile_usability")
        if mu:
            notes.append("mobile checker " + ("ok" if mu["verdict"] else "negative") + " (" + ", ".join(
                f"{ep} {mu[ep]['suitability']}" for ep in ("nnapi", "coreml_mlprogram")) + ")")
        if v.get("note"):
            notes.append(v["note"])

        def num(key: str, fmt: str) -> str:
            return format(v[key], fmt) if key in v else "-"

        print(f"{job['label']:<12} {job['files']:>6} {job['bytes'] / 1e6:>8.1f} {v.get('users_checked', 0):>7} "
              f"{num('max_abs_diff', '.2e'):>15} {num('delta_rel_err', '.2%'):>7} {num('dssim_vs_fp32', '.2e'):>13}  "
              f"{'; '.join(notes)}")
    if any("faces" in v for v in report.verified.values()):
        print("faces: " + next(v["faces"] for v in report.verified.values() if "faces" in v))
    for note in report.skipped:
        print(f"skipped {note}")
    a = report.alike
    if a:
        pairs = a["nets"] * (a["nets"] - 1) // 2
        print(f"users' nets: δ cos {a['delta_cos']:.3f} between the perturbations of {a['nets']} users on the "
              f"verification faces; {a['identical_pairs']:.0%} of {pairs} pairs identical at 8 bits; one δ for "
              f"{a['largest_group']:.0%} of them")
        # the record written into every model: the same rule and words as `protect` prints from it
        line = alike_line(report.protection)
        if line:
            print(line + " (retrain, or issue from another HyperNet)")
