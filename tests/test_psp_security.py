"""PSP security: issuance/registration limits (also under concurrency), the near-duplicate
re-draw, secrets at rest (hashed tokens, encrypted z and files), nothing secret in logs,
the invite-code verifier."""

from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from psp_support import client_for, extra_client, make_service, new_account
from sqlalchemy import select

from hyperobf.export.secrets_z import secure_normal
from hyperobf.psp.db import IssuedNet, Token
from hyperobf.psp.engine import Variant
from hyperobf.psp.fingerprint import from_bytes
from hyperobf.psp.issuance import IssueJob
from hyperobf.psp.verify import InviteCodeVerifier


class ScriptedSampler:
    """Returns the scripted latents first (one row per draw), then fresh CSPRNG ones."""

    def __init__(self, *rows: np.ndarray) -> None:
        self.rows = list(rows)
        self.lock = threading.Lock()
        self.calls = 0

    def __call__(self, n: int, dim: int) -> np.ndarray:
        with self.lock:
            self.calls += 1
            out = [self.rows.pop(0) if self.rows else secure_normal(1, dim)[0] for _ in range(n)]
        return np.stack(out).astype(np.float32)


# --- limits -------------------------------------------------------------------------------
def test_account_limits(psp_engine, db_url):  # noqa: ANN001
    svc = make_service(psp_engine, db_url, max_active_per_account=1, max_issued_per_account=3)
    with client_for(svc) as c:
        h = new_account(c)["headers"]
        first = c.post("/v1/masknets", headers=h).json()
        r = c.post("/v1/masknets", headers=h)
        assert r.status_code == 429 and r.json()["error"] == "limit_exceeded" and "active" in r.json()["detail"]
        # rotation replaces the active net, so it is allowed until the per-window count is reached
        second = c.post(f"/v1/masknets/{first['model_id']}/rotate", headers=h).json()
        third = c.post(f"/v1/masknets/{second['model_id']}/rotate", headers=h)
        assert third.status_code == 201
        r = c.post(f"/v1/masknets/{third.json()['model_id']}/rotate", headers=h)
        assert r.status_code == 429 and "per-account issuance limit reached (3 per day)" in r.json()["detail"]
        assert 86000 < int(r.headers["retry-after"]) <= 86400
        # retiring does not reset the window: the account collected 3 nets today
        c.post(f"/v1/masknets/{third.json()['model_id']}/retire", headers=h)
        assert c.post("/v1/masknets", headers=h).status_code == 429
        assert c.get("/v1/account", headers=h).json()["issued_masknets"] == 3


def test_client_limits(psp_engine, db_url):  # noqa: ANN001
    """One address cannot register many "devices", nor collect many nets through several accounts."""
    svc = make_service(psp_engine, db_url, max_accounts_per_client=2, max_issued_per_client=2,
                       max_issued_per_account=5)
    with client_for(svc, "10.0.0.1") as c:
        a, b = new_account(c), new_account(c)
        r = c.post("/v1/accounts", json={})
        assert r.status_code == 429 and "account creation limit" in r.json()["detail"]
        elsewhere = extra_client(c, "10.0.0.2")
        other = new_account(elsewhere)  # another address may still register
        assert c.post("/v1/masknets", headers=a["headers"]).status_code == 201
        assert c.post("/v1/masknets", headers=b["headers"]).status_code == 201
        # the third net requested from 10.0.0.1 is refused whichever account asks
        r = c.post("/v1/masknets", headers=other["headers"])
        assert r.status_code == 429 and "per-client issuance" in r.json()["detail"]
        assert elsewhere.post("/v1/masknets", headers=other["headers"]).status_code == 201


def test_limits_hold_under_concurrent_requests(psp_engine, db_url):  # noqa: ANN001
    """Requests racing past the pre-check are refused by the check inside the recording transaction."""
    svc = make_service(psp_engine, db_url, max_active_per_account=2, max_issued_per_account=10, max_wait_ms=50.0)
    with client_for(svc) as c:
        h = new_account(c)["headers"]
        with ThreadPoolExecutor(8) as pool:
            codes = sorted(pool.map(lambda _: c.post("/v1/masknets", headers=h).status_code, range(8)))
        assert codes == [201, 201] + [429] * 6
        assert len(c.get("/v1/masknets", headers=h).json()["masknets"]) == 2


def test_limits_checked_inside_the_batch(psp_engine, tmp_path):  # noqa: ANN001
    """Four jobs of one account in one micro-batch, active limit 2: the recording transaction
    (not only the request-time pre-check) refuses the last two."""
    from hyperobf.psp.errors import LimitExceeded

    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 'lb.db'}", max_active_per_account=2)
    account = _account_ids(svc, 1)[0]
    jobs = [IssueJob(account, "client", Variant("onnx", "fp32", "fixed")) for _ in range(4)]
    svc.issuer.process(jobs)
    assert [j.future.exception(timeout=5) is None for j in jobs] == [True, True, False, False]
    assert all(isinstance(j.future.exception(), LimitExceeded) for j in jobs[2:])
    with svc.sessions() as s:
        assert len(s.execute(select(IssuedNet)).all()) == 2


def _account_ids(svc, n: int) -> list[int]:  # noqa: ANN001
    from hyperobf.psp.db import Account

    public = [svc.create_account({}, "10.0.0.1")[0] for _ in range(n)]
    with svc.sessions() as s:
        return [s.execute(select(Account.id).where(Account.public_id == p)).scalar_one() for p in public]


# --- near-duplicates ----------------------------------------------------------------------
def test_near_duplicate_is_redrawn(psp_engine, db_url):  # noqa: ANN001
    z0 = secure_normal(1, psp_engine.z_dim)[0]
    sampler = ScriptedSampler(z0, z0.copy())  # the second request first draws the first one's latent again
    svc = make_service(psp_engine, db_url, z_sampler=sampler, min_distance=0.01, max_issued_per_client=50)
    with client_for(svc) as c:
        a, b = new_account(c), new_account(c)
        na = c.post("/v1/masknets", headers=a["headers"]).json()
        nb = c.post("/v1/masknets", headers=b["headers"]).json()
        assert na["sha256"] != nb["sha256"]
    with svc.sessions() as s:
        rows = {r.model_id: r for r in s.execute(select(IssuedNet)).scalars()}
    assert rows[na["model_id"]].draws == 1 and rows[nb["model_id"]].draws == 2
    assert svc.issuer.stats["redraws"] == 1
    d = np.linalg.norm(from_bytes(rows[na["model_id"]].fingerprint) - from_bytes(rows[nb["model_id"]].fingerprint))
    assert d >= 0.01


def test_near_duplicate_threshold_forced(psp_engine, db_url):  # noqa: ANN001
    """A huge threshold refuses every net after the first (503 after max_draws); zero lets duplicates through."""
    svc = make_service(psp_engine, db_url, min_distance=1e9, max_draws=3, max_issued_per_client=50)
    with client_for(svc) as c:
        a, b = new_account(c), new_account(c)
        assert c.post("/v1/masknets", headers=a["headers"]).status_code == 201  # nothing to compare with yet
        r = c.post("/v1/masknets", headers=b["headers"])
        assert r.status_code == 503 and r.json()["error"] == "unavailable" and "3 attempts" in r.json()["detail"]
        assert c.get("/v1/masknets", headers=b["headers"]).json()["masknets"] == []
    assert svc.issuer.stats["refused_near_duplicate"] == 1 and svc.issuer.stats["redraws"] == 2



def test_zero_threshold_lets_duplicates_through(psp_engine, tmp_path):  # noqa: ANN001
    import onnx
    from onnx import numpy_helper

    z0 = secure_normal(1, psp_engine.z_dim)[0]
    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 'z.db'}", min_distance=0.0,
                       z_sampler=ScriptedSampler(z0, z0.copy()))
    with client_for(svc) as c:
        files = []
        for acc in (new_account(c), new_account(c)):
            net = c.post("/v1/masknets", headers=acc["headers"]).json()
            files.append(onnx.load_from_string(c.get(net["download"], headers=acc["headers"]).content))
    weights = [{t.name: numpy_helper.to_array(t) for t in f.graph.initializer} for f in files]
    # the same net twice: only the threshold prevents this
    assert svc.issuer.stats["redraws"] == 0
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_duplicates_within_one_batch(psp_engine, tmp_path):  # noqa: ANN001
    """Two requests in the same micro-batch drawing the same latent: the second is re-drawn."""
    z0 = secure_normal(1, psp_engine.z_dim)[0]
    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 'b.db'}", z_sampler=ScriptedSampler(z0, z0.copy()),
                       min_distance=0.01)
    acc = _account_ids(svc, 2)
    jobs = [IssueJob(a, "client", Variant("onnx", "fp32", "fixed")) for a in acc]
    svc.issuer.process(jobs)
    rows = [j.future.result(timeout=5) for j in jobs]
    assert [r.draws for r in rows] == [1, 2]
    assert not np.array_equal(jobs[0].z, jobs[1].z)


# --- secrets ------------------------------------------------------------------------------
@pytest.mark.parametrize("z_storage", ["encrypted", "none"])
def test_secrets_at_rest(psp_engine, tmp_path, z_storage):  # noqa: ANN001
    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 's.db'}", z_storage=z_storage)
    with client_for(svc, "192.0.2.7") as c:
        acc = new_account(c)
        net = c.post("/v1/masknets", headers=acc["headers"]).json()
        data = c.get(net["download"], headers=acc["headers"]).content
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("s.db*"))  # the database and its WAL
    assert acc["token"].encode() not in raw and b"192.0.2.7" not in raw
    with svc.sessions() as s:
        tok = s.execute(select(Token)).scalar_one()
        row = s.execute(select(IssuedNet)).scalar_one()
    assert tok.token_sha256 == hashlib.sha256(acc["token"].encode()).hexdigest()
    assert row.client_hash != "192.0.2.7" and len(row.client_hash) == 64
    assert data not in raw and svc.box.decrypt(row.file_enc) == data
    if z_storage == "none":
        assert row.z_enc is None
        return
    z = np.frombuffer(svc.box.decrypt(row.z_enc), np.float32).copy()
    assert z.tobytes() not in raw  # only the Fernet token is stored
    # it is the real latent: regenerating from it gives the recorded fingerprint
    _, fp = psp_engine.generate(z[None])
    np.testing.assert_allclose(fp[0], from_bytes(row.fingerprint), atol=2e-3)


def test_no_secrets_in_logs(psp_engine, tmp_path, caplog):  # noqa: ANN001
    caplog.set_level(logging.DEBUG)
    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 'l.db'}")
    with client_for(svc) as c:
        acc = new_account(c)
        h = acc["headers"]
        net = c.post("/v1/masknets", headers=h).json()
        c.get(net["download"], headers=h)
        rotated = c.post("/v1/tokens/rotate", headers=h).json()["token"]
        c.get("/v1/masknets", headers={"Authorization": "Bearer hob_wrong"})
    with svc.sessions() as s:
        z_enc = s.execute(select(IssuedNet.z_enc)).scalar_one()
    z = np.frombuffer(svc.box.decrypt(z_enc), np.float32)
    text = caplog.text
    assert net["model_id"] in text  # logging works, and says what happened
    for secret in (acc["token"], rotated, acc["token"][4:20], f"{z[0]:.4f}", f"{z[0]!r}"):
        assert secret not in text


def test_invite_verifier(psp_engine, tmp_path):  # noqa: ANN001
    codes = tmp_path / "codes.txt"
    codes.write_text("# one account per code\nalpha-123\nbravo-456\n")
    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 'i.db'}", verifier="invite",
                       invite_codes_file=str(codes))
    with client_for(svc) as c:
        r = c.post("/v1/accounts", json={})
        assert r.status_code == 403 and "invite code is required" in r.json()["detail"]
        r = c.post("/v1/accounts", json={"evidence": {"invite_code": "alpha-124"}})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        assert c.post("/v1/accounts", json={"evidence": {"invite_code": "alpha-123"}}).status_code == 201
        r = c.post("/v1/accounts", json={"evidence": {"invite_code": "alpha-123"}})
        assert r.status_code == 409 and r.json()["error"] == "conflict"
        assert c.post("/v1/accounts", json={"evidence": {"invite_code": "bravo-456"}}).status_code == 201
    assert "alpha-123" not in (tmp_path / "i.db").read_bytes().decode("latin-1")
    assert isinstance(InviteCodeVerifier(codes).verify({"invite_code": "bravo-456"}, "x").subject, str)


def test_download_once(psp_engine, tmp_path):  # noqa: ANN001
    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 'o.db'}", download_once=True)
    with client_for(svc) as c:
        h = new_account(c)["headers"]
        net = c.post("/v1/masknets", headers=h).json()
        assert c.get(net["download"], headers=h).status_code == 200
        r = c.get(net["download"], headers=h)
        assert r.status_code == 410 and "already downloaded" in r.json()["detail"]


def test_fingerprint_regenerates_from_weights(psp_engine):  # noqa: ANN001
    """The fingerprint is a function of behaviour: identical weights -> identical fingerprint; from the
    weights alone it is regenerated exactly, and it is the projection of the plain MaskNet's δ / ρ on
    the probe batch (so it changes when the nets behave differently)."""
    from hyperobf.models.masknet import MaskNet

    z = secure_normal(2, psp_engine.z_dim)
    w, fp = psp_engine.generate(np.concatenate([z, z]))
    np.testing.assert_array_equal(fp[:2], fp[2:])
    fpr = psp_engine.fingerprinter
    params = {k: torch.from_numpy(v[:2]) for k, v in w.items()}
    again = fpr(psp_engine.spec, params)
    assert again.shape == (2, fpr.dim)
    # the same up to float summation order (the grouped conv's kernel depends on how many nets it holds)
    np.testing.assert_allclose(again, fp[:2], rtol=1e-5, atol=1e-5 * np.abs(fp).max())
    assert np.abs(fp[0] - fp[1]).max() > 1e-3 * np.abs(fp[0]).max()  # two users, two behaviours
    spec = psp_engine.spec
    with torch.no_grad():  # the reference: one ordinary nn.Module per user on the probe images
        ref = torch.stack([MaskNet.from_numpy(spec, {k: v[i] for k, v in w.items()}).delta(fpr.probe.cpu())
                           for i in range(2)]) / spec.rho_pixel  # (2, b, 3, S, S)
    want = (ref.reshape(2, -1) @ fpr.proj.cpu()).numpy()
    np.testing.assert_allclose(fp[:2], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())  # float sums differ


def test_expired_token_and_disabled_account(psp_engine, tmp_path):  # noqa: ANN001
    import datetime as dt

    from sqlalchemy import update

    from hyperobf.psp.db import Account

    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 'e.db'}")
    with client_for(svc) as c:
        a, b = new_account(c), new_account(c)
        with svc.sessions() as s, s.begin():
            s.execute(update(Token).where(Token.token_sha256 == hashlib.sha256(a["token"].encode()).hexdigest())
                      .values(expires_at=dt.datetime(2000, 1, 1)))
            s.execute(update(Account).where(Account.public_id == b["account_id"]).values(disabled=True))
        r = c.get("/v1/account", headers=a["headers"])
        assert r.status_code == 401 and "expired" in r.json()["detail"]
        r = c.post("/v1/masknets", headers=b["headers"])
        assert r.status_code == 403 and r.json()["error"] == "forbidden"


def test_failed_batch_answers_503_without_details(psp_engine, tmp_path, caplog):  # noqa: ANN001
    svc = make_service(psp_engine, f"sqlite:///{tmp_path / 'x.db'}")

    def broken(files):  # noqa: ANN001, ANN202
        raise RuntimeError("disk on fire: secret-ish detail")

    svc.issuer._record = broken
    with client_for(svc) as c:
        h = new_account(c)["headers"]
        r = c.post("/v1/masknets", headers=h)
        assert r.status_code == 503 and r.json() == {"error": "unavailable", "detail": "issuance failed; try again"}
        assert c.get("/v1/masknets", headers=h).json()["masknets"] == []
    assert "issuance batch failed: RuntimeError" in caplog.text and "secret-ish" not in caplog.text
