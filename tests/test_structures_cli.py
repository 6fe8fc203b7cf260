"""`hyperobf structures`: every builtin structure with its parameters, GFLOP per face and digest; torch-free."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from hyperobf.cli import app
from hyperobf.spec import BUILTIN, builtin_spec, flops

runner = CliRunner()


def test_json_rows_match_the_specs():
    r = runner.invoke(app, ["structures", "--json", "--rho-pixel", "0.05"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["name"] for row in rows] == [builtin_spec(n).name for n in BUILTIN]
    for row in rows:
        spec = builtin_spec(row["name"], 0.05)
        assert row["params"] == spec.num_params() and row["spec_digest"] == spec.digest()
        assert row["gflop_per_face"] == round(flops(spec) / 1e9, 4)
    u = next(row for row in rows if row["name"] == "U")
    assert u["skips"] == ["enc2->dec2", "enc1->dec1"] and u["spec_format"] == 2 and u["size_multiple"] == 4


def test_table_lists_every_structure():
    r = runner.invoke(app, ["structures"])
    assert r.exit_code == 0
    lines = r.output.splitlines()
    for name in BUILTIN:
        spec = builtin_spec(name)
        line = next(l for l in lines if l.split()[:1] == [spec.name])
        assert f"{flops(spec) / 1e9:.3f}" in line and spec.digest()[:16] in line


def test_bad_rho_is_one_line():
    r = runner.invoke(app, ["structures", "--rho-pixel", "2"])
    assert r.exit_code == 1 and r.output.strip().splitlines() == ["error: --rho-pixel must be in (0, 1]"]


def test_structures_command_imports_no_torch():
    code = ("import sys; from hyperobf.cli.structures_cmd import structures, describe; from hyperobf.spec import builtin_spec; "
            "describe(builtin_spec('U')); assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
