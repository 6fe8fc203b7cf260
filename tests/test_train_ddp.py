"""Multi-process data parallelism (torchrun, gloo on CPU): two ranks train and rank 0 writes one checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_cpu(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "hyperobf.cli", "train", "-c", str(ROOT / "configs" / "tiny.toml"), "--epochs", "1", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "checkpoint.pt").is_file()
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["epoch"] == 1  # written once, by rank 0
    assert r.stdout.count("checkpoint:") == 1
