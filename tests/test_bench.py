"""Smoke tests of the benchmark harness on tiny sizes: JSON structure, target checking, plots, CLI.

Never asserts on timings (speed targets are checked by benchmarks/check_targets.py from the JSON).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _restore_threads():
    """The benchmarks pin torch's thread count (1 here: a contended 2-core box stalls 2-thread runs); restore it."""
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def _tiny_generate(out: Path, *extra: str) -> dict:
    from benchmarks import bench_generate

    return bench_generate.main([
        "--structure", "tiny", "--ns", "3,20", "--dtypes", "fp32", "--repeats", "2", "--repeats-large", "1",
        "--loop-cap", "3", "--member-steps", "1", "--member-batch", "2", "--threads", "1",
        "--out", str(out), "--no-plot", *extra])


@pytest.fixture(scope="module")
def generation(tmp_path_factory) -> tuple[Path, dict]:
    out, old = tmp_path_factory.mktemp("gen"), torch.get_num_threads()
    try:
        _tiny_generate(out)
    finally:
        torch.set_num_threads(old)
    return out, json.loads((out / "generation.json").read_text())


def test_generation_json_structure(generation):
    _, d = generation
    m = d["machine"]
    assert {"cpu", "cores", "loadavg_1m", "libraries", "time"} <= set(m) and "torch" in m["libraries"]
    assert d["complete"] is True and d["device"] == "cpu" and d["structure"] == "tiny"
    assert d["reference_max_abs_diff"] < 1e-4
    assert len(d["load_start"]) == 3 and len(d["load_end"]) == 3
    assert [p["n"] for p in d["thesis"]["points"]] == [10, 100, 10000]
    impls = {(r["impl"], r["n"]) for r in d["rows"]}
    assert impls == {("ensemble_member", 1), ("hypernet", 3), ("reference", 3), ("loop", 3),
                     ("hypernet", 20), ("reference", 20)}  # the loop stops at --loop-cap
    for r in d["rows"]:
        assert r["seconds"] > 0 and r["dtype"] == "fp32" and r["host_copy"] is False
        if r["impl"] != "ensemble_member":
            assert r["repeats"] >= 1 and r["min_s"] <= r["seconds"] <= r["max_s"]
            assert r["nets_per_s"] == pytest.approx(r["n"] / r["seconds"])
            assert r["peak_mem_mb"] is None or r["peak_mem_mb"] > 0
    member = next(r for r in d["rows"] if r["impl"] == "ensemble_member")
    assert member["steps"] == 1 and member["batch_images"] == 2 and "lower bound" in member["note"]
    assert {(q["n"], q["dtype"]) for q in d["ratios"]} == {(3, "fp32"), (20, "fp32")}
    for q in d["ratios"]:  # the target's ratio: median of interleaved pairs (5 by default)
        assert q["pairs"] == 5 == len(q["pair_ratios"]) and q["ratio"] > 0 and q["ratio_of_medians"] > 0
        assert q["ratio"] == pytest.approx(sorted(q["pair_ratios"])[2], rel=1e-3)
    assert "reference" in d["roofs"]
    assert m["load_before"] == d["load_start"] and len(m["load_after"]) == 3 and "vector_extensions" in m


def test_generation_chunking_and_budget(tmp_path):
    from benchmarks import bench_generate

    bench_generate.main(["--structure", "tiny", "--ns", "20", "--dtypes", "fp32", "--repeats", "1", "--chunk", "8",
                         "--loop-cap", "0", "--member-steps", "0", "--threads", "1",
                         "--out", str(tmp_path), "--no-plot"])
    d = json.loads((tmp_path / "generation.json").read_text())
    assert {r["chunk"] for r in d["rows"]} == {8} and {r["impl"] for r in d["rows"]} == {"hypernet", "reference"}
    _tiny_generate(tmp_path, "--budget-s", "1e-9")
    d = json.loads((tmp_path / "generation.json").read_text())
    assert d["complete"] is False and d["skipped_for_budget"] == ["fp32 host_copy=False N=3", "fp32 host_copy=False N=20"]
    assert [r["impl"] for r in d["rows"]] == ["ensemble_member"]  # the member runs first, before the budget bites


def test_generation_rejects_bad_args(tmp_path):
    from benchmarks import bench_generate

    with pytest.raises(SystemExit, match="--ns"):
        bench_generate.main(["--ns", "ten", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="CUDA|dtypes"):
        bench_generate.main(["--device", "cuda" if not torch.cuda.is_available() else "cpu",
                             "--dtypes", "fp64", "--out", str(tmp_path)])
    assert not (tmp_path / "generation.json").exists()


def test_batched_apply_json(tmp_path):
    from benchmarks import bench_batched_apply

    d = bench_batched_apply.main(["--structure", "tiny", "--k", "1,3", "--size", "16", "--repeats", "1",
                                  "--threads", "1", "--out", str(tmp_path), "--no-plot"])
    assert json.loads((tmp_path / "batched_apply.json").read_text())["rows"] == json.loads(json.dumps(d["rows"]))
    got = {(r["impl"], r["k"]) for r in d["rows"]}
    assert got == {("batched", 1), ("loop", 1), ("batched", 3), ("loop", 3)}
    roof = d["roofs"]["torch_sgemm_1t"]  # torch's own sgemm at the same threads, start and end of the run
    assert roof["engine"] == "torch" and len(roof["samples"]) == 2 and roof["value"] == max(roof["samples"])
    for r in d["rows"]:
        assert r["images_per_s"] == pytest.approx(r["k"] / r["seconds"])
        # stored to 4 decimals: a tiny net on a loaded box has ratios ~0.003, where that rounding exceeds 1 %
        assert r["ratio_to_sgemm"] == pytest.approx(r["gflop_per_s"] / roof["value"], rel=1e-2, abs=5e-5)


def test_plots_from_json(generation, tmp_path):
    from benchmarks import plots

    _, d = generation
    png = plots.plot_generation(d, tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "generation.json").write_text(json.dumps(d))
    (tmp_path / "apply.json").write_text(json.dumps({"rows": "not a list"}))  # unknown layout: skipped, no crash
    made = plots.plot_dir(tmp_path)
    assert [p.name for p in made] == ["generation.png"]


def _gen_json(folder: Path, ours: float, ref: float) -> None:
    rows = [{"impl": "hypernet", "n": 10_000, "dtype": "fp32", "host_copy": False, "seconds": ours},
            {"impl": "reference", "n": 10_000, "dtype": "fp32", "host_copy": False, "seconds": ref}]
    (folder / "generation.json").write_text(json.dumps({"device": "cpu", "rows": rows}))


def test_check_targets_pass_miss_missing(tmp_path, capsys):
    from benchmarks import check_targets

    _gen_json(tmp_path, 0.95, 1.0)
    assert check_targets.main([str(tmp_path), "--targets", "generate"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert check_targets.main([str(tmp_path)]) == 2  # export/apply/photo have no data
    assert check_targets.main([str(tmp_path), "--allow-missing"]) == 0
    _gen_json(tmp_path, 1.05, 1.0)  # the limit is 1.0x the reference kernel
    assert check_targets.main([str(tmp_path), "--targets", "generate"]) == 1
    assert "MISS" in capsys.readouterr().out
    assert check_targets.main([str(tmp_path), "--targets", "nonsense"]) == 2


@pytest.mark.slow  # > 5 s on 2 shared cores (pytest --durations)
def test_cli_bench_forwards_to_scripts(tmp_path):
    _gen_json(tmp_path, 1.0, 1.0)
    cmd = [sys.executable, "-m", "hyperobf.cli", "bench"]
    ok = subprocess.run([*cmd, "check", str(tmp_path), "--targets", "generate"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "PASS" in ok.stdout
    _gen_json(tmp_path, 2.0, 1.0)
    miss = subprocess.run([*cmd, "check", str(tmp_path), "--targets", "generate"], capture_output=True, text=True, timeout=120)
    assert miss.returncode == 1 and "MISS" in miss.stdout
    helped = subprocess.run([*cmd, "generate", "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--checkpoint" in helped.stdout  # the script's own help


@pytest.mark.slow
def test_run_all_quick(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--quick", "--only", "generate,batched",
                          "--out", str(tmp_path), "--no-check"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert {"generation.json", "generation.png", "batched_apply.json", "batched_apply.png"} <= {p.name for p in tmp_path.iterdir()}


@pytest.mark.gpu
def test_generation_cuda_rows(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from benchmarks import bench_generate

    d = bench_generate.main(["--device", "cuda", "--structure", "tiny", "--ns", "3,20", "--repeats", "2",
                             "--loop-cap", "3", "--member-steps", "1", "--member-batch", "2", "--out", str(tmp_path), "--no-plot"])
    variants = {(r["dtype"], r["host_copy"]) for r in d["rows"] if r["impl"] == "hypernet"}
    assert variants == {(dt, h) for dt in ("fp32", "tf32", "bf16") for h in (False, True)}
    assert all(r["timer"] == "cuda_events" and r["wall_s"] > 0 for r in d["rows"] if r["impl"] != "ensemble_member")


def test_apply_structures_json(tmp_path):
    """bench_apply.py --structures: one row per (structure, variant) with the spec's FLOP count and its ratio to
    the sgemm roof of the same run; written to apply_structures.json (apply.json untouched)."""
    from benchmarks import bench_apply
    from hyperobf.spec import builtin_spec, flops

    assert bench_apply.main(["--structures", "tiny,D", "--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "apply.json").exists()
    payload = json.loads((tmp_path / "apply_structures.json").read_text())
    rows = payload["rows"]
    assert payload["structures"] == ["tiny", "D"] and "machine" in payload
    for name in ("tiny", "D"):
        mine = [r for r in rows if r["structure"] == name]
        assert {r["variant"] for r in mine} >= {"onnx-fp32-fixed", "onnx-fp32-dynamic", "onnx-int8-dynamic"}
        spec = builtin_spec(name)
        for r in mine:
            assert r["params"] == spec.num_params() and r["gflop"] == round(flops(spec) / 1e9, 4)
            assert r["ms"] > 0 and r["gflop_per_s"] == pytest.approx(flops(spec) / 1e9 / r["ms"] * 1e3, rel=1e-2, abs=0.01)  # 2 decimals: a slow (loaded) run reads ~3 GFLOP/s
    roof = payload["roofs"]["sgemm_1t"]  # onnxruntime's sgemm at the same threads, sampled once per round
    assert roof["engine"] == "onnxruntime" and roof["threads"] == 1 and roof["value"] == max(roof["samples"]) > 0
    for r in rows:
        assert r["ratio_to_sgemm"] == pytest.approx(r["gflop_per_s"] / roof["value"], rel=2e-2)
