"""CORS on the PSP for the web client (web/, issue 17): off by default, exact origins only when configured."""

from __future__ import annotations

import hashlib

import pytest

from psp_support import client_for, make_service, new_account

PAGE = "https://photos.example"


def _download(svc, origin: str):  # noqa: ANN001, ANN202
    with client_for(svc) as c:
        h = new_account(c)["headers"]
        net = c.post("/v1/masknets", headers=h, json={"format": "onnx"}).json()
        pre = c.options(net["download"], headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                                   "Access-Control-Request-Headers": "authorization"})
        r = c.get(net["download"], headers={**h, "Origin": origin})
    return net, pre, r


def test_cors_off_by_default(psp_engine, tmp_path):
    net, pre, r = _download(make_service(psp_engine, f"sqlite:///{tmp_path / 'a.db'}"), PAGE)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in pre.headers


def test_cors_for_the_configured_origin_only(psp_engine, tmp_path):
    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 'b.db'}", cors_origins=[PAGE])
    net, pre, r = _download(svc, PAGE)
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == PAGE
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    assert r.headers["access-control-allow-origin"] == PAGE
    exposed = r.headers["access-control-expose-headers"].lower()
    assert "x-content-sha256" in exposed and "content-disposition" in exposed  # the page checks the sha256
    assert hashlib.sha256(r.content).hexdigest() == r.headers["x-content-sha256"] == net["sha256"]
    assert "access-control-allow-credentials" not in r.headers
    _, pre2, r2 = _download(make_service(psp_engine, f"sqlite:///{tmp_path / 'c.db'}", cors_origins=[PAGE]),
                            "https://evil.example")
    assert "access-control-allow-origin" not in r2.headers and pre2.status_code == 400


@pytest.mark.parametrize("bad", [["*"], ["https://a.example/"], ["a.example"], ["https://a.example/path"], "https://a.example"])
def test_cors_origins_checked(bad):
    from hyperobf.psp.config import PSPConfig

    with pytest.raises(ValueError, match="cors_origins"):
        PSPConfig(cors_origins=bad)
    assert PSPConfig.from_dict({"cors_origins": ["http://127.0.0.1:8017", PAGE]}).cors_origins == ("http://127.0.0.1:8017", PAGE)
