"""`hyperobf account` / `hyperobf fetch` (standard-library HTTP client) against the real PSP app served
by uvicorn on a loopback port: account + token file (0600), issue + download + sha256 check +
manifest row, then `protect --manifest` with the fetched model; unreachable and erroring PSPs give
one line; the service accepts an empty account request and logs its verifier at start-up."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import logging
import socket
import stat
import threading
import time
from typing import Iterator

import pytest
from PIL import Image
from psp_support import client_for, make_service
from typer.testing import CliRunner

from hyperobf.cli import app
from hyperobf.psp_client import Account, PSPClient, PSPError
from runtime_support import noise_image


@contextlib.contextmanager
def serving(service) -> Iterator[str]:  # noqa: ANN001
    """The real app under uvicorn in a thread, on a free loopback port -> its base URL."""
    import uvicorn

    from hyperobf.psp.api import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        service.sessions.kw["bind"].dispose()


@pytest.fixture
def psp_url(psp_engine, tmp_path) -> Iterator[str]:
    service = make_service(psp_engine, f"sqlite:///{tmp_path / 'psp.db'}", max_active_per_account=1,
                           max_issued_per_account=10)
    with serving(service) as url:
        yield url


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_account_fetch_protect_end_to_end(psp_url, tmp_path):
    acc_file = tmp_path / "cfg" / "account.json"
    r = _cli("account", "create", "--server", psp_url, "--account-file", str(acc_file))
    assert r.exit_code == 0, r.output
    acc = Account.load(acc_file)
    assert r.stdout.strip() == (f"account {acc.account_id} created on {psp_url}; token saved to {acc_file} "
                                f"(mode 0600, expires {acc.expires_at})")
    assert stat.S_IMODE(acc_file.stat().st_mode) == 0o600 and acc.token

    models = tmp_path / "models"
    r = _cli("fetch", "--account-file", str(acc_file), "-o", str(models), "--format", "onnx", "--shape", "dynamic")
    assert r.exit_code == 0, r.output
    [model] = [p for p in models.iterdir() if p.suffix == ".onnx"]
    rows = [json.loads(l) for l in (models / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["file"] == model.name
    assert rows[0]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest() and rows[0]["server"] == psp_url
    assert f"sha256 verified) -> {model}" in r.stdout.splitlines()[0]
    listed = PSPClient(psp_url, acc.token)._json("GET", "/v1/masknets")["masknets"]
    assert [n["model_id"] for n in listed] == [rows[0]["model_id"]]

    photo = tmp_path / "me.png"
    Image.fromarray(noise_image(40, 40)).save(photo)
    r = _cli("protect", str(photo), "-m", str(model), "--manifest", str(models / "manifest.jsonl"))
    assert r.exit_code == 0, r.output
    assert "protected 1, skipped 0, failed 0" in r.stdout

    # the PSP's limit (one active net) is reported on one line, and nothing is written
    r = _cli("fetch", "--account-file", str(acc_file), "-o", str(models))
    assert r.exit_code == 1 and r.stdout == ""
    [line] = r.stderr.splitlines()
    assert line.startswith(f"error: the PSP at {psp_url} refused: ") and line.endswith("(HTTP 429 limit_exceeded)")
    assert len(list(models.iterdir())) == 2

    # rotation: a new net replaces the old one, and the photo is protected again over its old output
    old_id = rows[0]["model_id"]
    r = _cli("fetch", "--account-file", str(acc_file), "-o", str(models), "--replace", old_id, "--shape", "dynamic")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == (f"MaskNet {old_id} retired on the PSP; re-protect photos with the new one "
                                        "(protect --overwrite)")
    rows = [json.loads(l) for l in (models / "manifest.jsonl").read_text().splitlines()]
    new = models / rows[1]["file"]
    assert len(rows) == 2 and rows[1]["model_id"] != old_id and new.is_file()
    before = (tmp_path / "me_protected.png").read_bytes()
    r = _cli("protect", str(photo), "-m", str(new), "--manifest", str(models / "manifest.jsonl"), "--overwrite")
    assert r.exit_code == 0 and "protected 1, skipped 0, failed 0" in r.stdout, r.output
    assert (tmp_path / "me_protected.png").read_bytes() != before
    r = _cli("fetch", "--account-file", str(acc_file), "-o", str(tmp_path / "again"), "--model-id", old_id)
    assert r.exit_code == 1 and "can no longer be downloaded (retired)" in r.stderr
    r = _cli("fetch", "--account-file", str(acc_file), "-o", str(tmp_path / "again"), "--model-id", rows[1]["model_id"])
    assert r.exit_code == 0 and (tmp_path / "again" / new.name).read_bytes() == new.read_bytes()


def test_token_rotation_and_revocation(psp_url, tmp_path):
    acc_file = tmp_path / "account.json"
    assert _cli("account", "create", "--server", psp_url, "--account-file", str(acc_file)).exit_code == 0
    old = Account.load(acc_file)
    r = _cli("account", "create", "--server", psp_url, "--account-file", str(acc_file))
    assert r.exit_code == 1 and "an account file exists" in r.stderr

    r = _cli("account", "token", "--account-file", str(acc_file))
    assert r.exit_code == 0, r.output
    new = Account.load(acc_file)
    assert new.token != old.token and new.account_id == old.account_id
    assert stat.S_IMODE(acc_file.stat().st_mode) == 0o600
    with pytest.raises(PSPError, match=r"refused: .*\(HTTP 401 unauthorized\)"):
        PSPClient(psp_url, old.token).account()
    r = _cli("account", "show", "--account-file", str(acc_file))
    assert r.exit_code == 0 and r.stdout.startswith(f"account {new.account_id} on {psp_url}: 0 active MaskNet(s)")

    r = _cli("account", "token", "--revoke", "--account-file", str(acc_file))
    assert r.exit_code == 0 and not acc_file.exists()
    with pytest.raises(PSPError, match="HTTP 401"):
        PSPClient(psp_url, new.token).account()
    r = _cli("fetch", "--account-file", str(acc_file))
    assert r.exit_code == 1 and r.stderr.startswith(f"error: no account file at {acc_file}")


def test_unreachable_psp_is_one_line(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    r = _cli("account", "create", "--server", url, "--account-file", str(tmp_path / "a.json"))
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr == f"error: cannot reach the PSP at {url}: Connection refused\n"
    assert not (tmp_path / "a.json").exists()


class _Fake(http.server.BaseHTTPRequestHandler):
    """A broken PSP: HTML 502 for accounts, a net whose download does not match its sha256."""

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass

    def _send(self, code: int, body: bytes, ctype: str, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/v1/accounts":
            self._send(502, b"<html>Bad Gateway</html>", "text/html")
        else:
            net = {"model_id": "mn_x", "format": "onnx", "sha256": hashlib.sha256(b"good").hexdigest(),
                   "download": "/v1/masknets/mn_x/file"}
            self._send(201, json.dumps(net).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802
        self._send(200, b"tampered", "application/octet-stream", X_Content_SHA256=hashlib.sha256(b"good").hexdigest(),
                   Content_Disposition='attachment; filename="mn_x.onnx"')


def test_erroring_psp_and_corrupt_download(tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        r = _cli("account", "create", "--server", url, "--account-file", str(tmp_path / "a.json"))
        assert r.exit_code == 1
        assert r.stderr == f"error: the PSP at {url} refused: no reason given (HTTP 502 Bad Gateway)\n"
        Account(url, "acc_x", "tok", "never").save(tmp_path / "a.json")
        r = _cli("fetch", "--account-file", str(tmp_path / "a.json"), "-o", str(tmp_path / "models"))
        assert r.exit_code == 1 and len(r.stderr.splitlines()) == 1
        assert "downloaded model mn_x is corrupt" in r.stderr and "(nothing written)" in r.stderr
        assert not (tmp_path / "models").exists()
    finally:
        srv.shutdown()
        srv.server_close()


def test_tokens_never_go_over_plain_http_to_another_host():
    with pytest.raises(PSPError, match="refusing plain http to psp.example.org"):
        PSPClient("http://psp.example.org:8000")
    PSPClient("https://psp.example.org")  # fine: nothing is sent until a call
    PSPClient("http://localhost:8000")


def test_empty_account_request_and_verifier_in_startup_log(psp_engine, tmp_path, caplog):
    service = make_service(psp_engine, f"sqlite:///{tmp_path / 'psp.db'}")
    with caplog.at_level(logging.INFO, logger="hyperobf.psp"), client_for(service) as c:
        r = c.post("/v1/accounts")  # no body at all
        assert r.status_code == 201, r.text
        r = c.post("/v1/accounts", content=b"", headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
    assert ("verifier open: anyone may create an account (development and load tests; per-client limits still "
            "apply)") in caplog.messages

    codes = tmp_path / "codes.txt"
    codes.write_text("ABC\n")
    service = make_service(psp_engine, f"sqlite:///{tmp_path / 'psp2.db'}", verifier="invite",
                           invite_codes_file=str(codes))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hyperobf.psp"), client_for(service) as c:
        r = c.post("/v1/accounts")
        assert r.status_code == 403 and "invite code is required" in r.json()["detail"]
    assert f"verifier invite: one account per code in {codes}" in caplog.messages
