"""Exporter: round trip per format (parametrised over the format table), metadata read back,
users' files differ, z never inside a model file, manifest and seeds file, refused variants.

One export of 2 users in every format x precision (module fixture) feeds most tests; the
users' weights are regenerated from the seeds file, so every check compares the files with
what the HyperNet makes from each user's secret z.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from hyperobf.model_formats import FORMATS, SUFFIXES, format_of
from hyperobf.export.issue import issue_users
from hyperobf.train.sources import generate_users
from hyperobf.export.verify import ExportRefused, VerifyInputs, ort_outputs, ort_session, reference
from hyperobf.model_meta import PREFIX, parse_metadata
from hyperobf.spec import builtin_spec
from runtime_support import seeded_users

N_USERS = 2
ALL_PRECISIONS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    from hyperobf.train.checkpoint import load_checkpoint

    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def exported(loaded, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out, seeds = root / "models", root / "seeds.jsonl"
    with pytest.MonkeyPatch.context() as mp:  # fixed users: see seeded_users
        mp.setattr("hyperobf.export.issue.secure_normal", seeded_users(0))
        report = issue_users(loaded, N_USERS, out, formats=list(FORMATS), precisions=ALL_PRECISIONS, verify="all",
                             seeds_file=seeds)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    z_rows = [json.loads(line) for line in seeds.read_text().splitlines()]
    z = np.array([r["z"] for r in z_rows], np.float32)
    params = generate_users(loaded, z)  # the weights each user's z yields: {name: (2, *shape)}
    return {"out": out, "seeds": seeds, "report": report, "rows": rows, "z": z, "params": params,
            "z_rows": z_rows}


def _rows(exported, fmt, precision=None):
    return [r for r in exported["rows"] if r["format"] == fmt and (precision is None or r["precision"] == precision)]


def _file_bytes(path: Path) -> bytes:
    """A model file's bytes, or a package folder's files concatenated."""
    if path.is_dir():
        return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())
    return path.read_bytes()


def test_every_supported_combination_exported(exported):
    report = exported["report"]
    want = {(f, p) for f, row in FORMATS.items() for p in ALL_PRECISIONS if p in row.precisions}
    got = {(r["format"], r["precision"]) for r in exported["rows"]}
    assert got == want
    assert len(exported["rows"]) == N_USERS * len(want)
    assert report.skipped == ["coreml int8: not supported (supported: fp32, fp16)"]
    for label, v in report.verified.items():
        assert v["users_checked"] == N_USERS, label  # --verify all
        assert v["delta_rel_err"] <= 0.05
    assert report.verified["onnx"]["max_abs_diff"] <= 1e-5
    assert report.verified["onnx"]["mobile_usability"]["verdict"] is True
    assert report.verified["coreml"]["prediction"] == "skipped (needs macOS)"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip(exported, fmt):
    """Each file, read back, reproduces the weights/outputs of its user's z (per the format table)."""
    spec, params = _spec(), exported["params"]
    for r in _rows(exported, fmt):
        i = int(r["user"][len("user"):])
        path = exported["out"] / r["file"]
        assert format_of(path.name).name == fmt
        user = {k: v[i:i + 1] for k, v in params.items()}
        if fmt == "coreml":  # no prediction on Linux: the weights must read back exactly
            from hyperobf.export.coreml_verify import read_package

            got, _, _ = read_package(path, spec, r["precision"])
            for k, v in got.items():
                want = user[k][0].astype(np.float16).astype(np.float32) if r["precision"] == "fp16" else user[k][0]
                assert np.array_equal(v, want), (r["file"], k)
            continue
        x = np.random.default_rng(i).random((2, 3, 112, 112), dtype=np.float32)
        ref_delta = reference(spec, user, VerifyInputs({"x": x}, "test"))["x"][1][0]
        out, delta = ort_outputs(path.read_bytes(), x)
        err = np.abs(delta - ref_delta).max()
        if r["precision"] == "fp32":
            assert err <= 1e-5, r["file"]
        else:
            assert 0 < err / np.abs(ref_delta).max() <= 0.05, r["file"]  # changed, but within the limit
        assert np.allclose(out, np.clip(x + delta, 0, 1), atol=1e-6)


def _spec():
    return builtin_spec("tiny")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_metadata_read_back(exported, fmt):
    for r in _rows(exported, fmt):
        path = exported["out"] / r["file"]
        if fmt == "onnx":
            model = onnx.load(path)
            props = {p.key: p.value for p in model.metadata_props}
            assert [i.name for i in model.graph.input] == ["image"]
            assert [o.name for o in model.graph.output] == ["protected", "delta"]
            assert model.opset_import[0].version == 17
        elif fmt == "ort":
            props = dict(ort_session(path.read_bytes()).get_modelmeta().custom_metadata_map)
        else:
            from hyperobf.export.coreml_verify import read_package

            _, props, mlspec = read_package(path, _spec(), r["precision"])
            desc = mlspec.description.metadata
            assert desc.author and desc.versionString and "MaskNet" in desc.shortDescription
            assert json.loads(props[PREFIX + "deployment_target"]) == "iOS15"
        meta = parse_metadata(props)  # every value is JSON (json.loads, never eval)
        assert meta["spec"] == _spec()
        assert meta["model_id"] == r["model_id"]
        assert meta["precision"] == r["precision"] and meta["format"] == fmt
        assert meta["checkpoint_sha256"] == r["checkpoint_sha256"]
        assert meta["input"]["shape"] == [1, 3, 112, 112]


def test_users_files_differ(exported):
    for fmt in FORMATS:
        for p in ALL_PRECISIONS:
            rows = _rows(exported, fmt, p)
            assert len({r["sha256"] for r in rows}) == len(rows)
            assert len({r["model_id"] for r in rows}) == len(rows)
    w = exported["params"]["conv1.weight"]
    assert not np.allclose(w[0], w[1])


def test_z_never_in_model_files(exported):
    """No 8-byte window of any user's z (float32) occurs in any model file; weights do (control)."""
    files = [_file_bytes(exported["out"] / r["file"]) for r in exported["rows"]]
    z = exported["z"]
    windows = {z[u, k:k + 2].tobytes() for u in range(len(z)) for k in range(z.shape[1] - 1)}
    for data in files:
        assert not any(w in data for w in windows)
    # positive control: the search does find a user's float32 weights in that user's fp32 ONNX file
    onnx0 = (exported["out"] / _rows(exported, "onnx", "fp32")[0]["file"]).read_bytes()
    assert exported["params"]["conv1.weight"][0].tobytes() in onnx0
    # nor in the manifest
    manifest = (exported["out"] / "manifest.jsonl").read_bytes()
    assert not any(w in manifest for w in windows) and b'"z"' not in manifest


def test_manifest_and_seeds(exported, loaded):
    for r in exported["rows"]:
        path = exported["out"] / r["file"]
        assert r["structure"] == "tiny" and r["spec_digest"] == _spec().digest()
        assert r["checkpoint_sha256"] == loaded.sha256
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == r["sha256"] and r["bytes"] == path.stat().st_size
        else:
            from hyperobf.export.writer import tree_sha256

            files = {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
                     for p in path.rglob("*") if p.is_file()}
            assert tree_sha256(files) == r["sha256"] and r["sha256_of"] == "package-tree"
    assert stat.S_IMODE(os.stat(exported["seeds"]).st_mode) == 0o600
    by_user = {r["user"]: r["model_id"] for r in exported["rows"]}
    assert {r["user"]: r["model_id"] for r in exported["z_rows"]} == by_user
    # nothing but the outputs: no staging folders left behind
    assert not [p for p in exported["out"].parent.iterdir() if "staging" in p.name]
    assert not [p for p in exported["out"].iterdir() if p.name.startswith(".")]


def test_device_runtime_recognises_and_runs(exported):
    from hyperobf.device_runtime import load_model

    for fmt in ("onnx", "ort"):
        r = _rows(exported, fmt, "int8")[0]
        model = load_model(exported["out"] / r["file"])
        protected, delta = model.run(np.full((1, 3, 112, 112), 0.5, np.float32))
        assert protected.shape == (1, 3, 112, 112) and 0 < np.abs(delta).max() <= 0.03 + 1e-6
    assert SUFFIXES == {".onnx": "onnx", ".ort": "ort", ".mlpackage": "coreml"}


def test_dynamic_shape_runs_at_other_sizes(loaded, tmp_path):
    report = issue_users(loaded, 1, tmp_path / "dyn", formats=["onnx", "ort"], shape="dynamic")
    assert report.verified["onnx"]["users_checked"] == report.verified["ort"]["users_checked"] == 1
    path = tmp_path / "dyn" / "user0000.onnx"
    dims = [d.dim_param or d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, "H", "W"]
    out, delta = ort_outputs(path.read_bytes(), np.random.default_rng(0).random((1, 3, 40, 72), dtype=np.float32))
    assert delta.shape == (1, 3, 40, 72)


def test_refused_variant_leaves_nothing(loaded, tmp_path, monkeypatch):
    """A variant whose δ error exceeds the limit is refused; no file, folder or seeds file remains."""
    import hyperobf.export.verify as verify

    monkeypatch.setattr(verify, "DELTA_TOL", 1e-6)  # fp16 changes δ by ~1e-3: now over the limit
    seeds = tmp_path / "seeds.jsonl"
    with pytest.raises(ExportRefused, match="refusing to emit"):
        issue_users(loaded, 2, tmp_path / "out", formats=["onnx"], precisions=["fp32", "fp16"], seeds_file=seeds)
    assert list(tmp_path.iterdir()) == []


def test_destroyed_delta_is_refused(loaded, tmp_path, monkeypatch):
    """int8 with 2 quantisation levels per channel wrecks δ: refused at the default 5% limit."""
    import hyperobf.export.precision as precision

    original = precision.quantize_per_channel

    def crush(w):  # every weight becomes ±(channel max): a 1-bit quantiser
        q, scale = original(w)
        return np.sign(q).astype(np.int8), scale * 127

    monkeypatch.setattr(precision, "quantize_per_channel", crush)
    with pytest.raises(ExportRefused, match=r"onnx-int8: δ changes by"):
        issue_users(loaded, 1, tmp_path / "out", formats=["onnx"], precisions=["int8"])
    assert not (tmp_path / "out").exists()


def test_formats_table_is_torch_free():
    code = ("import sys, hyperobf.model_formats as f; "
            "assert not {'torch', 'onnx', 'coremltools'} & set(sys.modules), sorted(sys.modules); print(f.SUFFIXES)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert format_of("user0001.int8.onnx").name == "onnx" and format_of("a.mlpackage").is_directory
    assert format_of("notes.txt") is None
    assert FORMATS["onnx"].file_name("user7", "fp16") == "user7.fp16.onnx"


def test_onnx_template_render_api():
    """OnnxTemplate.render (used to issue single nets on request) == protobuf's own serialization."""
    from hyperobf.export.onnx_export import OnnxTemplate
    from hyperobf.export.onnx_graph import build_onnx
    from hyperobf.export.secrets_z import new_model_id
    from hyperobf.model_meta import build_metadata

    spec = builtin_spec("tiny")
    meta = build_metadata(spec, "", "c" * 64)
    rng = np.random.default_rng(1)
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in spec.param_shapes().items()}
    for precision in ALL_PRECISIONS:
        template = OnnxTemplate(spec, "fixed", meta, precision)
        mid = new_model_id()
        want = build_onnx(spec, params, "fixed", {**meta, PREFIX + "model_id": json.dumps(mid)}, precision)
        assert template.render(params, mid) == want.SerializeToString(), precision
    odd = template.render(params, "user-42")  # other id lengths take the protobuf path
    props = {p.key: p.value for p in onnx.load_from_string(odd).metadata_props}
    assert parse_metadata(props)["model_id"] == "user-42"


def test_int8_quantisation_bounds():
    from hyperobf.export.precision import decode, encode

    spec = builtin_spec("tiny")
    rng = np.random.default_rng(2)
    params = {k: rng.standard_normal((3, *s)).astype(np.float32) for k, s in spec.param_shapes().items()}
    params["conv1.weight"][1, 2] = 0.0  # an all-zero output channel
    stored = encode(spec, "int8", params)
    back = decode(spec, "int8", stored)
    for name, w in params.items():
        if name.endswith(".weight"):
            q, scale = stored[name + "_q"], stored[name + "_scale"]
            assert q.dtype == np.int8 and np.abs(q).max() == 127
            err = np.abs(back[name] - w).reshape(3, w.shape[1], -1).max(-1)
            assert (err <= scale / 2 + 1e-7).all()
        else:
            assert np.array_equal(back[name], w)  # biases stay float32
    assert np.all(back["conv1.weight"][1, 2] == 0)
