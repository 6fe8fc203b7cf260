"""Shared CLI helpers: one-line errors and progress bars."""

from __future__ import annotations

import contextlib
import sys
import tomllib
from typing import Iterator, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def fail(msg: str, code: int = 1) -> NoReturn:
    """Print ``error: msg`` on one line to stderr and exit non-zero (no traceback)."""
    print(f"error: {msg}", file=sys.stderr)
    raise typer.Exit(code)


@contextlib.contextmanager
def errors_as_one_line(*kinds: type[BaseException]) -> Iterator[None]:
    """Turn expected failures (bad input, missing files) into a one-line error and exit 1."""
    try:
        yield
    except typer.Exit:
        raise
    except kinds as e:  # type: ignore[misc]
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def progress_bar(disable: bool = False, console: Console | None = None) -> Progress:
    """A bar on ``console`` (default: stderr); print other lines through the same console so they never tear it."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=disable, transient=False, console=console or Console(stderr=True))


def parse_sets(items: list[str]) -> dict:
    """``key=value`` pairs, values parsed as TOML (numbers, booleans, [lists], "strings"; bare words = strings)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[key.strip()] = value
    return out


def command_line() -> str:
    """This process's command as a user would type it (recorded with measurements)."""
    import shlex
    import sys

    return shlex.join(["hyperobf", *sys.argv[1:]])

