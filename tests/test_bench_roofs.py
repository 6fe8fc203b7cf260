"""Roofs and ratios of the benchmarks (issue 18): machine stamp, the roof helpers, each benchmark's roof/ratio fields
on tiny sizes, and check_targets judging ratios. Never asserts on timings: the targets are judged by
benchmarks/check_targets.py from the JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
cpu MHz\t\t: 2000.000
cpu cores\t: 2
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni amx_tile amx_bf16

processor\t: 1
model name\t: Example CPU 9000
cpu MHz\t\t: 3000.000
cpu cores\t: 2
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni amx_tile amx_bf16
"""


def test_cpu_info_parses_model_clock_and_vector_extensions():
    from benchmarks._common import cpu_info, machine_label

    info = cpu_info(CPUINFO)
    assert info["cpu"] == "Example CPU 9000" and info["clock_mhz"] == 2500.0 and info["physical_cores_per_socket"] == 2
    vec = info["vector_extensions"]
    assert vec["AVX2"] and vec["AVX-512"] and vec["AVX-512 VNNI"] and vec["AMX"] and vec["AMX BF16"]
    assert not vec["AVX-VNNI"] and not vec["AMX INT8"] and not vec["AVX-512 BF16"]
    assert machine_label(info).startswith("Example CPU 9000, 2500 MHz, ") and "AVX-512 VNNI" in machine_label(info)
    bare = cpu_info("model name\t: Old CPU\nflags\t: fpu sse2\n")
    assert bare["clock_mhz"] is None and bare["vector_summary"].startswith("none of AVX2")


def test_write_json_stamps_machine_and_load(tmp_path):
    from benchmarks._common import write_json

    path = write_json("x", {"load_start": [9.0, 8.0, 7.0], "rows": []}, tmp_path)
    m = json.loads(path.read_text())["machine"]
    assert {"cpu", "clock_mhz", "vector_extensions", "cores", "cores_usable", "libraries", "label"} <= set(m)
    assert m["load_before"] == [9.0, 8.0, 7.0] and len(m["load_after"]) == 3


def test_roof_keeps_every_sample_and_the_best():
    from benchmarks._common import Roof

    vals = iter([3.0, 5.0, 4.0])
    up = Roof("r", "GFLOP/s", lambda: next(vals))
    assert up.value == 3.0  # sampled on first use
    up.sample(), up.sample()
    d = up.as_dict()
    assert d["samples"] == [3.0, 5.0, 4.0] and d["value"] == 5.0 and len(d["sample_load_1m"]) == 3
    vals = iter([3.0, 2.0])
    down = Roof("t", "s", lambda: next(vals), higher_is_better=False)
    down.sample(), down.sample()
    assert down.value == 2.0 and down.as_dict()["best"] == "min"


def test_sgemm_roof_engines():
    pytest.importorskip("onnxruntime")
    from benchmarks._common import sgemm_roof

    for engine in ("onnxruntime", "torch"):
        r = sgemm_roof(1, engine, n=64, calls=1)
        assert r.sample() > 0 and r.as_dict()["engine"] == engine and r.as_dict()["n"] == 64
    with pytest.raises(ValueError, match="engine"):
        sgemm_roof(1, "numpy")


def test_file_write_roof_writes_the_same_tree(tmp_path):
    from benchmarks._common import file_write_roof, tree_of

    src = tmp_path / "src"
    (src / "pkg.mlpackage" / "Data").mkdir(parents=True)
    (src / "a.onnx").write_bytes(b"x" * 1000)
    (src / "pkg.mlpackage" / "Data" / "w.bin").write_bytes(b"y" * 70)
    (src / "manifest.jsonl").write_bytes(b"")
    got = file_write_roof(tree_of(src), tmp_path / "bare")
    assert tree_of(tmp_path / "bare") == tree_of(src)
    assert got["files"] == 3 and got["folders"] == 2 and got["bytes"] == 1070 and got["seconds"] > 0
    with pytest.raises(FileExistsError):  # never writes over an existing folder
        file_write_roof(tree_of(src), tmp_path / "bare")


def test_pillow_roundtrip_writes_the_photo_again(tmp_path):
    from PIL import Image

    from benchmarks._common import pillow_roundtrip_s

    Image.new("RGB", (64, 48), (10, 200, 30)).save(tmp_path / "a.jpg", quality=90)
    assert pillow_roundtrip_s(tmp_path / "a.jpg", tmp_path / "b.jpg") > 0
    with Image.open(tmp_path / "b.jpg") as im:
        assert im.size == (64, 48) and im.format == "JPEG"


def test_paired_ratio_alternates_the_order():
    from benchmarks._common import paired_ratio

    calls = []
    got = paired_ratio(lambda: calls.append("a"), lambda: calls.append("b"), 3)
    assert calls == ["a", "b", "b", "a", "a", "b"] and got["pairs"] == 3 and len(got["pair_ratios"]) == 3


def test_apply_json_roofs_and_ratios(tmp_path):
    pytest.importorskip("onnxruntime")
    from benchmarks import bench_apply
    from hyperobf.spec import builtin_spec, flops

    assert bench_apply.main(["--quick", "--threads", "1", "--sizes", "16", "--sections", "net,e2e", "--photo", "160x120",
                             "--no-detector", "--out", str(tmp_path)]) == 0
    d = json.loads((tmp_path / "apply.json").read_text())
    roofs = d["roofs"]
    assert {"sgemm_1t", f"sgemm_{d['cpus_usable']}t", "torch_sgemm_1t"} <= set(roofs)
    assert all(len(r["samples"]) == 3 and r["value"] == max(r["samples"]) for r in roofs.values())  # start, net, e2e
    net = [r for r in d["rows"] if r["section"] == "net"]
    spec = builtin_spec("A")
    for r in net:
        assert r["gflop"] == round(flops(spec, 16, 16) / 1e9, 4)
        roof = roofs["torch_sgemm_1t" if r["runtime"] == "torch-eager" else "sgemm_1t"]["value"]
        assert r["ratio_to_sgemm"] == pytest.approx(r["gflop_per_s"] / roof, rel=1e-2)
    (e2e,) = [r for r in d["rows"] if r["section"] == "e2e"]
    assert e2e["megapixels"] == 0.02 and len(e2e["roof_samples_ms"]) == 1
    assert e2e["ratio_to_roof"] == pytest.approx(e2e["total_ms"] / e2e["roof_ms"], rel=2e-2)
    assert d["load_start"] and d["machine"]["load_before"] == d["load_start"]


def test_export_json_roof_and_ratio(tmp_path):
    pytest.importorskip("onnxruntime")
    from benchmarks import bench_export

    assert bench_export.main(["--ns", "4", "--formats", "onnx:fp32", "--repeats", "1", "--no-int8-study",
                              "--out", str(tmp_path)]) == 0
    d = json.loads((tmp_path / "export.json").read_text())
    (row,) = d["rows"]
    assert row["bare_write_files"] == 5  # 4 models + the manifest: the run's own tree
    assert row["ratio_to_bare_write"] == pytest.approx(row["seconds"] / row["bare_write_s"], rel=1e-2)
    assert d["roofs"]["file_write"]["samples"] == [row["bare_write_files_per_s"]]
    assert d["summary"][0]["ratio_to_bare_write_median"] == row["ratio_to_bare_write"]


def _apply_json(folder: Path, rows: list[dict], cpus: int = 2) -> None:
    (folder / "apply.json").write_text(json.dumps({"cpus_usable": cpus, "rows": rows}))


def _net(threads: int, ratio: float | None, **kw) -> dict:
    row = {"section": "net", "runtime": "onnxruntime", "format": ".onnx", "precision": "fp32", "size": 112,
           "threads": threads, "ms": 10.0, **kw}
    if ratio is not None:
        row.update(ratio_to_sgemm=ratio, gflop_per_s=30.0)
    return row


def _e2e(ratio: float | None, mp: float = 12.0) -> dict:
    row = {"section": "e2e", "variant": "face", "threads": 1, "total_ms": 300.0, "megapixels": mp}
    if ratio is not None:
        row.update(ratio_to_roof=ratio, roof_ms=300.0 / ratio)
    return row


def test_check_targets_apply_and_photo_ratios(tmp_path, capsys):
    from benchmarks import check_targets

    def run(rows: list[dict], target: str) -> tuple[int, str]:
        _apply_json(tmp_path, rows)
        rc = check_targets.main([str(tmp_path), "--targets", target])
        return rc, capsys.readouterr().out

    assert run([_net(1, 0.85), _net(2, 0.81), _net(3, 0.1)], "apply")[0] == 0  # 3 threads: neither 1 nor all cores
    rc, out = run([_net(1, 0.85), _net(2, 0.7)], "apply")
    assert rc == 1 and "apply 112^2 onnx fp32 2t / sgemm 2t" in out
    assert run([_net(1, 0.9, precision="int8"), _net(1, 0.5, section="options", variant="v")], "apply")[0] == 2
    rc, out = run([_net(1, None)], "apply")  # an older JSON: shown, not judged
    assert rc == 2 and "NO ROOF" in out
    assert run([_e2e(1.4)], "photo")[0] == 0
    assert run([_e2e(1.4), _e2e(1.6)], "photo")[0] == 1
    rc, out = run([_e2e(9.0, mp=0.1)], "photo")  # not the 12 MP photo: information only
    assert rc == 2 and "INFO" in out
    rc, out = run([_e2e(0.8)], "photo")  # faster than decode + encode alone: the roof sample was disturbed
    assert rc == 2 and "SUSPECT" in out


def test_check_targets_export_ratio(tmp_path, capsys):
    from benchmarks import check_targets

    def run(ratios: list[float | None], n: int = 10_000, **kw) -> int:
        rows = [{"format": "onnx", "precision": "fp32", "n": n, "seconds": 2.0, **kw,
                 **({"ratio_to_bare_write": q} if q is not None else {})} for q in ratios]
        rows.append({"format": "onnx", "precision": "int8", "n": n, "seconds": 9.0, "ratio_to_bare_write": 9.0})
        (tmp_path / "export.json").write_text(json.dumps({"rows": rows}))
        return check_targets.main([str(tmp_path), "--targets", "export"])

    assert run([1.1, 1.5, 1.15]) == 0  # median of the runs
    assert run([1.3, 1.1, 1.25]) == 1
    assert run([0.5]) == 2 and "SUSPECT" in capsys.readouterr().out
    assert run([None], bare_write_s=1.9) == 0  # an older JSON's bare write of the same files: 2.0 / 1.9
    assert run([None]) == 2 and "NO ROOF" in capsys.readouterr().out
    assert run([1.1], n=100) == 2  # only 10^4 files is the target


def test_check_targets_generation_prefers_the_paired_ratio(tmp_path, capsys):
    from benchmarks import check_targets

    rows = [{"impl": "hypernet", "n": 10_000, "dtype": "fp32", "host_copy": False, "seconds": 1.2},
            {"impl": "reference", "n": 10_000, "dtype": "fp32", "host_copy": False, "seconds": 1.0}]
    paired = [{"n": 10_000, "dtype": "fp32", "host_copy": False, "ratio": 0.99, "pairs": 5}]
    (tmp_path / "generation.json").write_text(json.dumps({"device": "cpu", "rows": rows, "ratios": paired}))
    assert check_targets.main([str(tmp_path), "--targets", "generate"]) == 0
    assert "paired x5" in capsys.readouterr().out
    paired[0]["ratio"] = 1.01
    (tmp_path / "generation.json").write_text(json.dumps({"device": "cpu", "rows": rows, "ratios": paired}))
    assert check_targets.main([str(tmp_path), "--targets", "generate"]) == 1


def test_plots_draw_the_ratio_panels(tmp_path):
    from benchmarks import plots

    _apply_json(tmp_path, [_net(1, 0.85), _net(2, 0.7), _e2e(1.4)])
    summary = [{"format": "onnx", "precision": "fp32", "n": 10_000, "files_per_s_median": 5000.0,
                "ratio_to_bare_write_median": 1.1}]
    (tmp_path / "export.json").write_text(json.dumps({"rows": [], "summary": summary,
                                                      "roofs": {"file_write": {"name": "bare write", "value": 9000.0,
                                                                               "unit": "files/s"}}}))
    made = plots.plot_dir(tmp_path)
    assert sorted(p.name for p in made) == ["apply.png", "export.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in made)
