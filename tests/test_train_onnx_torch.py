"""ONNX -> torch converter: matches onnxruntime on a generated embedder and on mobilefacenet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _train_support import write_tiny_embedder
from conftest import shared_path

from hyperobf.models.onnx_torch import load_onnx_module


def _ort_batch(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])  # model batch is 1


def test_generated_embedder_matches_onnxruntime(tmp_path):
    path = write_tiny_embedder(tmp_path / "tiny.onnx")
    x = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    ref = _ort_batch(path, x)
    m = load_onnx_module(path)
    with torch.no_grad():
        out = m(torch.from_numpy(x)).numpy()  # batch 3 through a graph declared with batch 1
    assert out.shape == ref.shape == (3, 16)
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_frozen_weights_not_in_state_dict_gradient_reaches_input(tmp_path):
    m = load_onnx_module(write_tiny_embedder(tmp_path / "tiny.onnx"))
    assert m.state_dict() == {} and not list(m.parameters())  # third-party weights never reach a checkpoint
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    m(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unsupported_op_and_bad_file_are_clear_errors(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g), str(tmp_path / "s.onnx"))
    with pytest.raises(ValueError, match="Softmax"):
        load_onnx_module(tmp_path / "s.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="not an ONNX model"):
        load_onnx_module(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError):
        load_onnx_module(tmp_path / "missing.onnx")


def test_mobilefacenet_matches_onnxruntime():
    path = shared_path("models", "mobilefacenet.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 112, 112)).astype(np.float32)
    ref = _ort_batch(path, x)
    m = load_onnx_module(path)
    with torch.no_grad():
        out = m(torch.from_numpy(x)).numpy()  # batch 2 through a graph declared with batch 1
    assert out.shape == (2, 128)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert m.state_dict() == {} and not list(m.parameters())  # frozen, never in a checkpoint
