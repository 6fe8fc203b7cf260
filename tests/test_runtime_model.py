"""Device runtime, model side: metadata and signature checks, manifests, session options,
ORT-format files, and that neither the runtime nor `hyperobf protect` imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from hyperobf.cli import app
from hyperobf.device_runtime import ModelError, SessionConfig, load_model
from hyperobf.model_meta import PREFIX
from runtime_support import build_model, env_without_torch, noise_image, tiny_params, write_manifest


runner = CliRunner()


def test_runtime_and_protect_command_do_not_import_torch(tmp_path, models):
    code = ("import hyperobf.device_runtime, hyperobf.device_runtime.refine, hyperobf.device_runtime.budget, "
            "hyperobf.presets, hyperobf.refiner_meta, hyperobf.cli.protect_cmd, sys; "
            "from hyperobf.device_runtime.budget import fit_budget, resolve_budget; import numpy as np; "
            "x = np.full((1, 3, 16, 16), 0.5, np.float32); fit_budget(x, x * 0 + 0.05, resolve_budget('low')[0], 0.05); "
            "assert 'torch' not in sys.modules and 'kornia' not in sys.modules and 'scipy' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # The real command line, with a poisoned `torch` first on the path: any import of it fails the run.
    from PIL import Image

    Image.fromarray(noise_image(40, 50)).save(tmp_path / "a.png")
    r = subprocess.run([sys.executable, "-m", "hyperobf.cli", "protect", str(tmp_path / "a.png"), "-m", str(models["fixed"])],
                       capture_output=True, text=True, timeout=120, env=env_without_torch(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a_protected.png").exists() and "protected 1" in r.stdout


def test_load_checks_metadata_and_runs(models):
    for shape, path in models.items():
        m = load_model(path, threads=1)
        assert m.spec.name == "tiny" and m.model_id == "user0000"
        assert (m.fixed_size == 112) == (shape == "fixed")
        x = np.random.default_rng(0).random((2, 3, 112, 112), dtype=np.float32)
        out, delta = m.run(x)
        assert out.shape == delta.shape == x.shape
        assert np.allclose(out, np.clip(x + delta, 0, 1), atol=1e-6)
        assert 0 < np.abs(delta).max() <= m.spec.rho_pixel + 1e-6
        assert np.allclose(m.delta(x), delta, atol=1e-7)


def test_unknown_format_version_refused(tmp_path):
    p = build_model(tmp_path / "v9.onnx", meta_overrides={PREFIX + "format_version": "9"})
    with pytest.raises(ModelError, match="unknown model format version 9"):
        load_model(p)


def test_tampered_spec_refused(tmp_path):
    from hyperobf.spec import builtin_spec

    other = json.dumps(builtin_spec("A").to_dict(), sort_keys=True, separators=(",", ":"))
    p = build_model(tmp_path / "tampered.onnx", meta_overrides={PREFIX + "spec": other})
    with pytest.raises(ModelError, match="digest"):
        load_model(p)


def _foreign(path, in_name="image", out_names=("protected", "delta"), shape=(1, 3, 112, 112), meta=None):
    """A valid ONNX graph (Identity / Neg) that is not a MaskNet, optionally carrying our metadata."""
    nodes = [helper.make_node("Identity", [in_name], [out_names[0]])]
    outs = [helper.make_tensor_value_info(out_names[0], TensorProto.FLOAT, list(shape))]
    if len(out_names) > 1:
        nodes.append(helper.make_node("Neg", [in_name], [out_names[1]]))
        outs.append(helper.make_tensor_value_info(out_names[1], TensorProto.FLOAT, list(shape)))
    g = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, list(shape))], outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    if meta:
        helper.set_model_props(m, meta)
    path.write_bytes(m.SerializeToString())
    return path


def test_signature_mismatch_refused(tmp_path):
    from hyperobf.model_meta import build_metadata

    spec, _ = tiny_params()
    meta = build_metadata(spec, "u", "0" * 64)
    with pytest.raises(ModelError, match="signature"):
        load_model(_foreign(tmp_path / "a.onnx", in_name="input", meta=meta))
    with pytest.raises(ModelError, match="signature"):
        load_model(_foreign(tmp_path / "b.onnx", out_names=("protected",), meta=meta))
    with pytest.raises(ModelError, match="input shape"):
        load_model(_foreign(tmp_path / "c.onnx", shape=(1, 1, 112, 112), meta=meta))
    with pytest.raises(ModelError, match="fixed input"):
        load_model(_foreign(tmp_path / "d.onnx", shape=(1, 3, 64, 64), meta=meta))
    # A well-formed MaskNet signature *with* metadata passes the check (so the refusals above are real).
    assert load_model(_foreign(tmp_path / "ok.onnx", meta=meta)).fixed_size == 112


def test_foreign_and_corrupt_models_refused(tmp_path, models):
    with pytest.raises(ModelError, match="not a HyperObf model"):
        load_model(_foreign(tmp_path / "plain.onnx"))
    data = models["dynamic"].read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(tmp_path / "cut.onnx")
    (tmp_path / "text.onnx").write_text("hello")
    with pytest.raises(ModelError, match="not a loadable"):
        load_model(tmp_path / "text.onnx")
    with pytest.raises(ModelError, match="cannot read model"):
        load_model(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match="unknown model file type"):
        load_model(tmp_path / "model.pt")
    (tmp_path / "user.mlpackage").mkdir()
    with pytest.raises(ModelError, match="coreml models are not run"):
        load_model(tmp_path / "user.mlpackage")


def test_manifest_sha256(tmp_path, models):
    good = write_manifest(tmp_path / "good.jsonl", models["dynamic"])
    assert load_model(models["dynamic"], manifest=good).sha256 in good.read_text()
    bad = write_manifest(tmp_path / "bad.jsonl", models["dynamic"], sha="ab" * 32)
    with pytest.raises(ModelError, match="sha256 does not match"):
        load_model(models["dynamic"], manifest=bad)
    other = write_manifest(tmp_path / "other.jsonl", models["fixed"])
    with pytest.raises(ModelError, match="not listed"):
        load_model(models["dynamic"], manifest=other)
    (tmp_path / "broken.jsonl").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read manifest"):
        load_model(models["dynamic"], manifest=tmp_path / "broken.jsonl")


def test_ort_format_model_loads_with_metadata(tmp_path, models):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "user.ort")  # a .ort path makes onnxruntime save ORT format
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    ort.InferenceSession(str(models["dynamic"]), opts, providers=["CPUExecutionProvider"])
    m_ort, m_onnx = load_model(tmp_path / "user.ort"), load_model(models["dynamic"])
    assert m_ort.format == "ort" and m_ort.spec == m_onnx.spec
    x = np.random.default_rng(1).random((1, 3, 64, 48), dtype=np.float32)
    assert np.allclose(m_ort.delta(x), m_onnx.delta(x), atol=1e-6)


def test_session_options(models):
    x = np.random.default_rng(2).random((1, 3, 112, 112), dtype=np.float32)
    ref = load_model(models["fixed"]).delta(x)
    for cfg in (SessionConfig(threads=1, optimization="basic"), SessionConfig(threads=2, parallel=True, spinning=False),
                SessionConfig(threads=1, providers=("cuda", "coreml"))):  # unavailable providers fall back to CPU
        assert np.allclose(load_model(models["fixed"], config=cfg).delta(x), ref, atol=1e-6)
    assert SessionConfig(providers=("cuda",)).resolved_providers()[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="optimization"):
        SessionConfig(optimization="max")


def test_cli_model_errors_are_one_line(tmp_path, models):
    from PIL import Image

    photo = tmp_path / "p.png"
    Image.fromarray(noise_image(30, 30)).save(photo)
    before = photo.read_bytes()
    data = models["dynamic"].read_bytes()
    (tmp_path / "corrupt.onnx").write_bytes(data[:100] + bytes(50) + data[150:])
    cases = {
        "corrupt.onnx": "not a loadable ONNX model",
        "plain.onnx": "not a HyperObf model",
        "missing.onnx": "cannot read model",
    }
    _foreign(tmp_path / "plain.onnx")
    for name, msg in cases.items():
        r = runner.invoke(app, ["protect", str(photo), "-m", str(tmp_path / name)])
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output, r.output
        assert r.output.strip().count("\n") == 0  # exactly one line
    bad = write_manifest(tmp_path / "m.jsonl", models["dynamic"], sha="00" * 32)
    r = runner.invoke(app, ["protect", str(photo), "-m", str(models["dynamic"]), "--manifest", str(bad)])
    assert r.exit_code == 1 and "sha256" in r.output
    r = runner.invoke(app, ["protect", str(photo), "-m", str(models["dynamic"]), "--mode", "face"])
    assert r.exit_code == 1 and "detector" in r.output
    r = runner.invoke(app, ["protect", str(photo), "-m", str(models["dynamic"]), "--detector", str(models["fixed"])])
    assert r.exit_code == 1 and "SCRFD" in r.output
    assert photo.read_bytes() == before and sorted(p.name for p in tmp_path.glob("p*")) == ["p.png", "plain.onnx"]
