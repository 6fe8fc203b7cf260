"""Exporting the skip-connection structures (U-small, U): every format x precision x shape, each
file read back and compared with the torch MaskNet of its user's generated weights.

The checkpoints hold *untrained* HyperNets with small generator widths (export cost and
correctness do not depend on training or on the HyperNet's width; the MaskNet is the full
structure), so the module builds in seconds and nothing is trained.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hyperobf.model_formats import FORMATS
from hyperobf.export.issue import issue_users
from hyperobf.train.sources import generate_users
from hyperobf.export.verify import VerifyInputs, ort_outputs, reference
from hyperobf.model_meta import parse_metadata
from hyperobf.spec import builtin_spec

ALL_PRECISIONS = ("fp32", "fp16", "int8")
# every format and precision of U and U-small: 15–25 s per structure (CoreML conversion); the default run
# has test_export_structures.py's fast round trip over every structure instead
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["U-small", "U"])
def loaded(request, tmp_path_factory):
    from hyperobf.train.checkpoint import load_checkpoint, save_checkpoint
    from hyperobf.train.config import TrainConfig
    from hyperobf.train.sources import build_source

    import torch

    torch.manual_seed(0)
    cfg = TrainConfig(structure=request.param, mixer_hidden=32, gen_hidden=16)
    spec = builtin_spec(cfg.structure, cfg.rho_pixel)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_checkpoint(path, spec, cfg, build_source(spec, cfg))
    return load_checkpoint(path)


def _issue(loaded, root, shape: str, n: int) -> dict:
    out, seeds = root / shape, root / f"seeds-{shape}.jsonl"
    report = issue_users(loaded, n, out, formats=list(FORMATS), precisions=ALL_PRECISIONS, shape=shape,
                         verify="all", seeds_file=seeds)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    z = np.array([json.loads(line)["z"] for line in seeds.read_text().splitlines()], np.float32)
    return {"out": out, "report": report, "rows": rows, "params": generate_users(loaded, z)}


@pytest.fixture(scope="module")
def exported(loaded, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {"fixed": _issue(loaded, root, "fixed", 2), "dynamic": _issue(loaded, root, "dynamic", 1)}


@pytest.mark.parametrize("shape", ["fixed", "dynamic"])
def test_every_combination_exported_and_verified(loaded, exported, shape):
    e = exported[shape]
    want = {(f, p) for f, row in FORMATS.items() for p in ALL_PRECISIONS if p in row.precisions}
    assert {(r["format"], r["precision"]) for r in e["rows"]} == want
    for r in e["rows"]:
        assert r["structure"] == loaded.spec.name and r["spec_digest"] == loaded.spec.digest()
    for label, v in e["report"].verified.items():
        assert v["users_checked"] == len(e["params"]["enc1.weight"]), label
        assert v["delta_rel_err"] <= 0.05, label
    assert e["report"].verified["onnx"]["max_abs_diff"] <= 1e-5


@pytest.mark.parametrize("shape", ["fixed", "dynamic"])
def test_files_match_torch(loaded, exported, shape):
    """ONNX / ORT: onnxruntime's δ vs the torch MaskNet's on fresh inputs (for dynamic models at a
    non-square size too); CoreML (no prediction on Linux): weights and spec read back exactly."""
    from hyperobf.device_runtime import load_model

    e, spec = exported[shape], loaded.spec
    sizes = [(112, 112)] + ([(48, 80)] if shape == "dynamic" else [])
    for r in e["rows"]:
        i = int(r["user"][len("user"):])
        path = e["out"] / r["file"]
        user = {k: v[i:i + 1] for k, v in e["params"].items()}
        if r["format"] == "coreml":
            from hyperobf.export.coreml_verify import read_package

            got, meta, _ = read_package(path, spec, r["precision"])
            for k, v in got.items():
                want = user[k][0].astype(np.float16).astype(np.float32) if r["precision"] == "fp16" else user[k][0]
                assert np.array_equal(v, want), (r["file"], k)
            assert parse_metadata(meta)["spec"] == spec
            continue
        assert load_model(path).spec == spec  # the runtime reads the spec-format-2 metadata back
        for hw in sizes:
            x = np.random.default_rng(i).random((1, 3, *hw), dtype=np.float32)
            ref = reference(spec, user, VerifyInputs({"x": x}, "test"), dssim=False)["x"][1][0]
            out, delta = ort_outputs(path.read_bytes(), x)
            err = float(np.abs(delta - ref).max() / np.abs(ref).max())
            if r["precision"] == "fp32":
                assert float(np.abs(delta - ref).max()) <= 1e-5, (r["file"], hw)
            else:
                assert 0 < err <= 0.05, (r["file"], hw)  # changed by the precision, within the limit
            assert np.allclose(out, np.clip(x + delta, 0, 1), atol=1e-6)


def test_coreml_program_wires_skips(loaded, exported):
    """The traced mlprogram concatenates [upsampled input, skip source's ReLU output] before each
    skip layer's conv (CoreML cannot run here, so the graph itself is checked)."""
    from hyperobf.export.coreml_export import quiet

    with quiet():
        import coremltools as ct

    spec = loaded.spec
    for r in (r for r in exported["fixed"]["rows"] if r["format"] == "coreml"):
        prog = ct.utils.load_spec(str(exported["fixed"]["out"] / r["file"])).mlProgram
        ops = [op for fn in prog.functions.values() for b in fn.block_specializations.values()
               for op in b.operations if op.type != "const"]
        producer = {o.name: op for op in ops for o in op.outputs}
        convs = [op for op in ops if op.type == "conv"]
        assert [op.inputs["weight"].arguments[0].name.split("_weight")[0] for op in convs] == \
               ["net_" + l.name for l in spec.layers]
        consumers = {a.name: op for op in ops for arg in op.inputs.values() for a in arg.arguments}
        relu_out = {l.name: consumers[c.outputs[0].name].outputs[0].name  # each hidden conv -> its relu
                    for l, c in zip(spec.layers, convs) if l.act == "relu"}
        assert all(consumers[c.outputs[0].name].type == "relu" for l, c in zip(spec.layers, convs) if l.act == "relu")
        for layer, conv in zip(spec.layers, convs):
            src = producer.get(conv.inputs["x"].arguments[0].name)  # None: the image input
            if not layer.concat:
                assert src is None or src.type != "concat"
                continue
            assert src.type == "concat"
            first, second = (a.name for a in src.inputs["values"].arguments)
            assert producer[first].type == "upsample_nearest_neighbor"
            assert second == relu_out[layer.concat]


def test_runtime_pads_odd_sizes_to_the_skip_multiple(loaded, exported):
    """Whole-photo mode pads a working image to multiples of the total stride (4 for U): an odd
    size runs, and δ matches the model on the edge-padded image, cropped."""
    from hyperobf.device_runtime import load_model
    from hyperobf.device_runtime.whole import delta_dynamic

    e = exported["dynamic"]
    r = next(r for r in e["rows"] if r["format"] == "onnx" and r["precision"] == "fp32")
    model = load_model(e["out"] / r["file"])
    assert loaded.spec.stride_product == 4
    rgb = np.random.default_rng(3).integers(0, 256, (50, 71, 3), dtype=np.uint8)
    d = delta_dynamic(rgb, model)
    padded = np.pad(rgb, ((0, 2), (0, 1), (0, 0)), mode="edge").astype(np.float32).transpose(2, 0, 1)[None] / 255
    want = model.delta(padded)[0].transpose(1, 2, 0)[:50, :71]
    assert d.shape == (50, 71, 3) and np.abs(d - want).max() <= 1e-6 and np.abs(d).max() > 0
