"""Reading a config dataclass from TOML: the one loader behind ``TrainConfig`` ([train]) and
``PSPConfig`` ([serve]). Pure Python.

A file may hold its settings under the table's name or at the top level; command-line
overrides given as None mean "not given" and leave the file's value. Unknown keys are an
error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path


def read_table(path: str | Path, table: str, overrides: dict | None = None) -> dict:
    """The ``[table]`` of a TOML file (or the whole file when it has no such table) plus overrides."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    data = dict(data.get(table, data))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return data


def check_keys(cls: type, data: dict, what: str = "config") -> None:
    """ValueError naming every key of ``data`` that is not a field of the dataclass ``cls``."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(sorted(unknown))}")
