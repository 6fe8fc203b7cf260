"""PSP API end to end (FastAPI TestClient) on a real SQLite file and, when available, PostgreSQL:
accounts and tokens, issue / download / rotate / retire / list, isolation between users,
JSON 4xx errors, the OpenAPI spec."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from psp_support import client_for, extra_client, make_service, new_account


@pytest.fixture
def service(psp_engine, db_url):  # noqa: ANN001, ANN201
    return make_service(psp_engine, db_url, max_active_per_account=2, max_issued_per_account=10)


def _run_onnx(data: bytes) -> tuple[np.ndarray, np.ndarray, dict]:
    x = np.random.default_rng(1).random((1, 3, 112, 112), dtype=np.float32)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    out, delta = sess.run(None, {"image": x})
    props = {p.key: json.loads(p.value) for p in onnx.load_from_string(data).metadata_props}
    return x, out, delta, props


def test_end_to_end(service, psp_engine):  # noqa: ANN001
    with client_for(service) as c:
        acc = new_account(c)
        h = acc["headers"]
        me = c.get("/v1/account", headers=h).json()
        assert me["account_id"] == acc["account_id"] and me["active_masknets"] == 0

        r = c.post("/v1/masknets", headers=h, json={"format": "onnx", "precision": "fp32", "shape": "fixed"})
        assert r.status_code == 201, r.text
        net = r.json()
        assert net["structure"] == "tiny" and net["hypernet_sha256"] == psp_engine.hypernet_sha256
        assert "z" not in net and net["retired_at"] is None

        r = c.get(net["download"], headers=h)
        assert r.status_code == 200
        data = r.content
        assert hashlib.sha256(data).hexdigest() == net["sha256"] == r.headers["x-content-sha256"]
        assert len(data) == net["size"]
        x, out, delta, props = _run_onnx(data)
        rho = psp_engine.spec.rho_pixel
        assert 0 < np.abs(delta).max() <= rho + 1e-6
        np.testing.assert_allclose(out, np.clip(x + delta, 0, 1), atol=1e-6)
        assert props["hyperobf.model_id"] == net["model_id"]
        assert props["hyperobf.checkpoint_sha256"] == psp_engine.hypernet_sha256

        # rotate: a new, different net; the old one is retired and no longer downloadable
        r = c.post(f"/v1/masknets/{net['model_id']}/rotate", headers=h)
        assert r.status_code == 201, r.text
        new = r.json()
        assert new["model_id"] != net["model_id"] and new["sha256"] != net["sha256"]
        old = c.get(f"/v1/masknets/{net['model_id']}", headers=h).json()
        assert old["retired_at"] is not None and old["replaced_by"] == new["model_id"] and old["download"] is None
        r = c.get(f"/v1/masknets/{net['model_id']}/file", headers=h)
        assert r.status_code == 410 and r.json()["error"] == "gone"
        _, _, delta2, _ = _run_onnx(c.get(new["download"], headers=h).content)
        assert np.abs(delta2 - delta).max() > 1e-3  # really another net
        r = c.post(f"/v1/masknets/{net['model_id']}/rotate", headers=h)
        assert r.status_code == 409

        active = [n["model_id"] for n in c.get("/v1/masknets", headers=h).json()["masknets"]]
        everything = [n["model_id"] for n in c.get("/v1/masknets?include_retired=true", headers=h).json()["masknets"]]
        assert active == [new["model_id"]] and everything == [net["model_id"], new["model_id"]]

        r = c.post(f"/v1/masknets/{new['model_id']}/retire", headers=h)
        assert r.status_code == 200 and r.json()["retired_at"] is not None
        assert c.get("/v1/masknets", headers=h).json()["masknets"] == []
        assert c.get("/v1/account", headers=h).json()["issued_masknets"] == 2

        # tokens: rotation invalidates the old token, revocation the current one
        r = c.post("/v1/tokens/rotate", headers=h)
        assert r.status_code == 201
        h2 = {"Authorization": f"Bearer {r.json()['token']}"}
        assert c.get("/v1/account", headers=h).status_code == 401
        assert c.get("/v1/account", headers=h2).status_code == 200
        assert c.delete("/v1/tokens/current", headers=h2).status_code == 204
        assert c.get("/v1/account", headers=h2).status_code == 401


def test_users_never_see_each_others_nets(service):  # noqa: ANN001
    with client_for(service) as c:
        a, b = new_account(c), new_account(c)
        net_a = c.post("/v1/masknets", headers=a["headers"]).json()
        net_b = c.post("/v1/masknets", headers=b["headers"]).json()
        mid = net_a["model_id"]
        hb = b["headers"]
        for method, path in (("get", f"/v1/masknets/{mid}"), ("get", f"/v1/masknets/{mid}/file"),
                             ("post", f"/v1/masknets/{mid}/rotate"), ("post", f"/v1/masknets/{mid}/retire")):
            r = getattr(c, method)(path, headers=hb)
            assert r.status_code == 404 and r.json()["error"] == "not_found", (path, r.text)
        # indistinguishable from a net that does not exist
        assert c.get("/v1/masknets/ffffffffffffffffffffffff", headers=hb).json()["detail"].startswith("no MaskNet")
        listed = c.get("/v1/masknets?include_retired=true", headers=hb).json()["masknets"]
        assert [n["model_id"] for n in listed] == [net_b["model_id"]]
        # A's net is untouched by B's attempts
        assert c.get(f"/v1/masknets/{mid}", headers=a["headers"]).json()["retired_at"] is None


def test_errors_are_clear_json_4xx(service):  # noqa: ANN001
    with client_for(service) as c:
        h = new_account(c)["headers"]
        r = c.get("/v1/masknets")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        r = c.get("/v1/masknets", headers={"Authorization": "Bearer hob_not-a-real-token"})
        assert r.status_code == 401 and r.json() == {"error": "unauthorized", "detail": "invalid token"}
        r = c.post("/v1/masknets", headers=h, json={"format": "tflite"})
        assert r.status_code == 400 and "not offered" in r.json()["detail"]
        r = c.post("/v1/masknets", headers=h, json={"precision": "fp64"})
        assert r.status_code == 400 and "precision" in r.json()["detail"]
        r = c.post("/v1/masknets", headers=h, json={"shape": "square"})
        assert r.status_code == 400 and "shape" in r.json()["detail"]
        r = c.post("/v1/masknets", headers=h, json={"fromat": "onnx"})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request" and "fromat" in r.json()["detail"]
        r = c.post("/v1/masknets", headers={**h, "Content-Type": "application/json"}, content=b"{not json")
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"
        r = c.post("/v1/accounts", json={"evidence": {"k": "v" * 5000}})
        assert r.status_code == 422 and "evidence" in r.json()["detail"]
        r = c.get("/v1/nowhere")
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        r = c.delete("/v1/masknets", headers=h)
        assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
        for r in (c.get("/v1/masknets", headers=h), c.get("/v1/health")):
            assert r.status_code == 200


def test_openapi_spec(service):  # noqa: ANN001
    with client_for(service) as c:
        spec = c.get("/openapi.json").json()
        paths = set(spec["paths"])
        assert {"/v1/accounts", "/v1/masknets", "/v1/masknets/{model_id}/file", "/v1/masknets/{model_id}/rotate",
                "/v1/tokens/rotate", "/v1/info"} <= paths
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert "429" in spec["paths"]["/v1/masknets"]["post"]["responses"]
        info = c.get("/v1/info").json()
        assert info["formats"][0]["format"] == "onnx" and "fp32" in info["formats"][0]["precisions"]


def test_other_client_address_sees_same_service(service):  # noqa: ANN001
    with client_for(service, "10.0.0.1") as c:
        acc = new_account(c)
        other = extra_client(c, "10.9.9.9")
        # a token works from any address (a phone changes networks)
        assert other.get("/v1/account", headers=acc["headers"]).status_code == 200


@pytest.mark.parametrize("fmt,precision,shape,tol", [
    ("onnx", "fp32", "dynamic", 1e-5), ("onnx", "fp16", "fixed", 0.01), ("onnx", "int8", "fixed", 0.1),
    ("ort", "fp32", "fixed", 1e-5),
])
def test_formats_and_precisions(psp_engine, tmp_path, fmt, precision, shape, tol):  # noqa: ANN001
    """Every variant the exporter's format table offers is served, and the file is the recorded user's
    net: its δ matches the torch reference of the weights regenerated from the stored (encrypted) z."""
    from sqlalchemy import select

    from hyperobf.export.verify import ort_outputs, torch_reference
    from hyperobf.psp.db import IssuedNet

    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 'f.db'}")
    with client_for(svc) as c:
        h = new_account(c)["headers"]
        r = c.post("/v1/masknets", headers=h, json={"format": fmt, "precision": precision, "shape": shape})
        assert r.status_code == 201, r.text
        net = r.json()
        assert (net["format"], net["precision"], net["shape"]) == (fmt, precision, shape)
        r = c.get(net["download"], headers=h)
        suffix = "" if precision == "fp32" else f".{precision}"
        assert r.headers["content-disposition"].endswith(f'{suffix}.{fmt}"')
    with svc.sessions() as s:
        z_enc = s.execute(select(IssuedNet.z_enc)).scalar_one()
    z = np.frombuffer(svc.box.decrypt(z_enc), np.float32).copy()[None]
    weights, _ = psp_engine.generate(z)
    size = 64 if shape == "dynamic" else 112
    x = np.random.default_rng(2).random((2, 3, size, size), dtype=np.float32)
    _, delta = ort_outputs(r.content, x)
    _, ref = torch_reference(psp_engine.spec, weights, x)
    rel = np.abs(delta - ref[0]).max() / np.abs(ref[0]).max()
    assert rel <= tol, rel


@pytest.mark.slow
def test_coreml_package_download(psp_engine, tmp_path):  # noqa: ANN001
    """CoreML is a package folder: served as one zip with a fixed layout (template build takes seconds)."""
    import io
    import zipfile

    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 'c.db'}")
    with client_for(svc) as c:
        h = new_account(c)["headers"]
        net = c.post("/v1/masknets", headers=h, json={"format": "coreml", "precision": "fp16"}).json()
        r = c.get(net["download"], headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert hashlib.sha256(r.content).hexdigest() == net["sha256"]
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    folder = f"masknet-{net['model_id']}.fp16.mlpackage"
    assert sorted(names) == sorted(f"{folder}/{p}" for p in (
        "Manifest.json", "Data/com.apple.CoreML/model.mlmodel", "Data/com.apple.CoreML/weights/weight.bin"))
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)
    from hyperobf.export.coreml_verify import read_package

    weights, meta, _ = read_package(tmp_path / folder, psp_engine.spec, "fp16")
    assert json.loads(meta["hyperobf.model_id"]) == net["model_id"]
    from sqlalchemy import select

    from hyperobf.psp.db import IssuedNet

    with svc.sessions() as s:
        z = np.frombuffer(svc.box.decrypt(s.execute(select(IssuedNet.z_enc)).scalar_one()), np.float32).copy()
    expected, _ = psp_engine.generate(z[None])
    for k, v in expected.items():  # the package holds this user's weights, rounded to fp16
        np.testing.assert_array_equal(weights[k], v[0].astype(np.float16).astype(np.float32))
