"""Command-line conventions of every command (issue 14): --version, -h, flags shown as flags, a flag
given a value refused, every option described, one --device default."""

from __future__ import annotations

import subprocess
import sys

import typer.main
from typer.testing import CliRunner

from hyperobf import __version__
from hyperobf.cli import app


def _commands():
    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    return list(walk(typer.main.get_command(app), []))


def test_version_and_short_help():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"hyperobf {__version__}"
    for args in (["-h"], ["protect", "-h"], ["eval", "run", "-h"], ["account", "create", "-h"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0 and "Usage: " in r.stdout, (args, r.output)
        assert any("--help" in l and " -h " in l for l in r.stdout.splitlines()), r.stdout


def test_flags_are_shown_as_flags():
    r = CliRunner().invoke(app, ["protect", "--help"])
    assert r.exit_code == 0
    assert "<bool>" not in r.stdout
    line = next(l for l in r.stdout.splitlines() if "--recursive" in l)
    assert "-r" in line and "Descend into" in line
    assert "<int range>" in r.stdout  # options that take a value still show its type


def test_flag_given_a_value_is_refused_not_read_as_a_path(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hyperobf.cli", "protect", str(tmp_path), "-r", "true", "-m", "x.onnx"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "error: -r is a flag and takes no value (got 'true'): give -r alone, or leave it out\n"


def test_every_option_of_every_command_is_described():
    missing = [f"{path} {p.name}" for path, cmd in _commands() for p in cmd.params
               if not (getattr(p, "help", None) or "").strip()]
    assert missing == []


def test_device_defaults_to_auto_everywhere():
    defaults = {}
    for path, cmd in _commands():
        for p in cmd.params:
            if p.name == "device":
                defaults[path] = p.default
    assert {"train", "serve", "protection-check", "eval run", "eval e1"} <= set(defaults)
    # None = the config's default, which is "auto" for training and the PSP as well
    assert {k: v for k, v in defaults.items() if v not in ("auto", None)} == {}
    from hyperobf.psp.config import PSPConfig
    from hyperobf.train.config import TrainConfig

    assert TrainConfig().device == PSPConfig().device == "auto"
