"""`hyperobf bench …`: run the benchmark scripts of a source checkout (benchmarks/ is not installed).

Every option after the sub-command goes to the script itself, e.g.
``hyperobf bench generate --device cuda --ns 10,100`` or ``hyperobf bench generate --help``.
The checkout is found next to this package (editable install) or at $HYPEROBF_REPO.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from .common import fail

bench_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                        help="Benchmarks (from a source checkout): generation, export, apply, all, check.")

# Options are not parsed here: everything after the sub-command is handed to the script.
_PASS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
SCRIPTS = {
    "generate": "bench_generate.py",
    "export": "bench_export.py",
    "apply": "bench_apply.py",
    "batched": "bench_batched_apply.py",
    "all": "run_all.py",
    "check": "check_targets.py",
    "plots": "plots.py",
}


def benchmarks_dir() -> Path | None:
    """benchmarks/ of the checkout: $HYPEROBF_REPO, else beside src/ (editable install), else ./benchmarks."""
    candidates = []
    if os.environ.get("HYPEROBF_REPO"):
        candidates.append(Path(os.environ["HYPEROBF_REPO"]) / "benchmarks")
    candidates += [Path(__file__).resolve().parents[3] / "benchmarks", Path.cwd() / "benchmarks"]
    return next((c for c in candidates if (c / "_common.py").is_file()), None)


def _run(name: str, args: list[str]) -> None:
    folder = benchmarks_dir()
    if folder is None:
        fail("benchmarks/ not found: run from a source checkout or set HYPEROBF_REPO to one")
    script = folder / SCRIPTS[name]
    if not script.is_file():
        fail(f"{script} is not in this checkout")
    rc = subprocess.run([sys.executable, str(script), *args]).returncode
    if rc:
        raise typer.Exit(rc)


def _command(name: str, doc: str) -> None:
    def cmd(ctx: typer.Context) -> None:
        _run(name, list(ctx.args))

    cmd.__doc__ = doc
    bench_app.command(name, context_settings=_PASS)(cmd)


_command("generate", "Generation latency, 10 -> 10^5 nets vs loop / ensemble member / batched reference (bench_generate.py).")
_command("export", "Export files/s for ONNX, CoreML and ORT format (bench_export.py).")
_command("apply", "On-device apply latency with onnxruntime (bench_apply.py).")
_command("batched", "Throughput of K users' nets in one grouped-conv call (bench_batched_apply.py).")
_command("all", "Every CPU benchmark, then the plots and the target check (run_all.py).")
_command("check", "Check the speed targets against the results JSON; non-zero exit on a miss (check_targets.py).")
_command("plots", "Redraw the PNG plots from the results JSON (plots.py).")
