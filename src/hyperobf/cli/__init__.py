"""`hyperobf` command line: train, export, protect, demo (and sub-apps added by other modules).

Heavy imports (torch, onnx) happen inside commands, so `hyperobf protect` stays torch-free.
"""

from __future__ import annotations

import os
import sys

import typer

from .bench_cmd import bench_app
from .common import fail  # noqa: F401  (re-exported for sub-apps)
from .protect_cmd import protect
from .export_cmd import export
from .psp_cmds import demo
from .refiner_cmd import export_refiner
from .serve_cmd import serve
from .structures_cmd import structures
from .train_cmd import protection_check, train
from .usage import HELP_OPTIONS, flag_given_a_value, root_options, show_flags_as_flags

show_flags_as_flags()
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings=HELP_OPTIONS,
                  help="HyperObf: per-user face-cloaking MaskNets (PSP training/export, on-device protection).")
app.callback()(root_options)
app.command()(train)
app.command()(export)
app.command()(protect)
app.command()(demo)
app.command("protection-check")(protection_check)
app.command()(structures)
app.command("export-refiner")(export_refiner)

from .eval_cmd import eval_app  # noqa: E402  (evaluation harness, issue 6)

app.add_typer(eval_app, name="eval")
app.command()(serve)
app.add_typer(bench_app, name="bench")

from .client_cmds import account_app, fetch  # noqa: E402  (PSP client, standard-library HTTP)

app.add_typer(account_app, name="account")
app.command()(fetch)


def main() -> None:
    bad = flag_given_a_value(typer.main.get_command(app), sys.argv[1:])
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        sys.exit(2)
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # last resort: one line, no traceback (HYPEROBF_DEBUG=1 shows it)
        if os.environ.get("HYPEROBF_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        sys.exit(1)
