"""Command-line conventions shared by every command: ``-h``, ``--version``, flags shown as flags
and a flag given a value (``-r true``) refused instead of the value being read as an input path."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from .. import __version__

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}  # context settings: sub-commands inherit them
_FLAG_WORDS = {"true", "false", "yes", "no", "on", "off"}


def show_flags_as_flags() -> None:
    """Help lists a flag bare (``--recursive -r``), not with a type (``--recursive -r <bool>``).

    The typer in use labels every option with its Python type, flags included, which reads as if the
    flag took a value (and users then write ``-r true``, where ``true`` becomes an input path).
    Typer versions without that label are left alone.
    """
    try:
        from typer.core import TyperOption
    except ImportError:
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_flags_bare", False):
        return

    def display_type_rich(self, ctx):  # noqa: ANN001, ANN202
        return None if self.is_flag else original(self, ctx)

    display_type_rich._flags_bare = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich


def flag_given_a_value(root, args: list[str]) -> str | None:  # noqa: ANN001  (a click/typer command)
    """A one-line error when a flag of the command ``args`` selects is followed by a word like ``true``
    that is not an existing file, else None. A flag takes no value: ``-r true`` would read ``true`` as an input."""
    cmd, i = root, 0
    while hasattr(cmd, "commands") and i < len(args):
        tok = args[i]
        i += 1
        if tok == "--":
            return None
        if tok.startswith("-"):
            continue
        if tok not in cmd.commands:
            return None
        cmd = cmd.commands[tok]
    flags = {opt for p in getattr(cmd, "params", []) if getattr(p, "is_flag", False)
             for opt in (*p.opts, *getattr(p, "secondary_opts", []))}
    for tok, nxt in zip(args[i:], args[i + 1:]):
        if tok == "--":
            break
        if tok in flags and nxt.lower() in _FLAG_WORDS and not os.path.exists(nxt):
            return f"{tok} is a flag and takes no value (got {nxt!r}): give {tok} alone, or leave it out"
    return None


def _print_version(value: bool) -> None:
    if value:
        print(f"hyperobf {__version__}")
        raise typer.Exit()


def root_options(
    version: Annotated[Optional[bool], typer.Option("--version", help="Print the version and exit.",
                                                    callback=_print_version, is_eager=True)] = None,
) -> None:
    """HyperObf: per-user face-cloaking MaskNets (PSP training/export, on-device protection)."""
