"""Client of the PSP HTTP API for users: create an account, keep its token, fetch one's MaskNet.

Standard library only (``urllib``), so the device install stays light: no torch, no HTTP package.
Every failure is a :class:`PSPError` with one line that says what happened (unreachable,
timed out, refused with the service's own ``detail``, a download whose sha256 does not match).

The account file (``~/.config/hyperobf/account.json`` unless told otherwise) holds the server URL,
the account id and the bearer token; it is written with mode 0600, atomically. Tokens are only
sent over https, or plain http to this machine (loopback), never in clear over a network.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from .fsmodes import default_file_mode

DEFAULT_SERVER = "http://127.0.0.1:8000"
MANIFEST = "manifest.jsonl"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class PSPError(Exception):
    """A one-line reason the PSP could not be used."""


def default_account_file() -> Path:
    """$HYPEROBF_ACCOUNT, else $XDG_CONFIG_HOME/hyperobf/account.json, else ~/.config/hyperobf/account.json."""
    if os.environ.get("HYPEROBF_ACCOUNT"):
        return Path(os.environ["HYPEROBF_ACCOUNT"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "hyperobf" / "account.json"


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` atomically with ``mode`` (a temp file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass(frozen=True)
class Account:
    server: str
    account_id: str
    token: str
    expires_at: str

    def save(self, path: Path) -> None:
        _write_atomic(path, (json.dumps(asdict(self), indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> "Account":
        try:
            row = json.loads(path.read_text())
            return cls(**{k: str(row[k]) for k in ("server", "account_id", "token", "expires_at")})
        except FileNotFoundError:
            raise PSPError(f"no account file at {path}: create one with `hyperobf account create --server URL`") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PSPError(f"cannot read account file {path} ({type(e).__name__})") from None


def _check_url(server: str) -> str:
    url = urllib.parse.urlsplit(server)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise PSPError(f"PSP address must be http(s)://host[:port], got {server!r}")
    if url.scheme == "http" and not _loopback(url.hostname):
        raise PSPError(f"refusing plain http to {url.hostname}: tokens would cross the network unencrypted; use https://")
    return server.rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _one_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


class PSPClient:
    """Calls on one PSP; ``token`` for the calls that need an account."""

    def __init__(self, server: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.server = _check_url(server)
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict[str, str], bytes]:
        headers = {"Accept": "application/json, application/octet-stream"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif method == "POST":
            data = b""
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.server + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (scheme checked)
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as e:
            raise PSPError(self._refusal(e)) from None
        except urllib.error.URLError as e:
            reason = e.reason.strerror if isinstance(e.reason, OSError) and e.reason.strerror else e.reason
            raise PSPError(f"cannot reach the PSP at {self.server}: {_one_line(str(reason))}") from None
        except (TimeoutError, socket.timeout):
            raise PSPError(f"the PSP at {self.server} did not answer within {self.timeout:g} s") from None
        except (OSError, ValueError) as e:  # connection reset, truncated answer, ...
            raise PSPError(f"the PSP at {self.server} broke off: {type(e).__name__} {_one_line(str(e))}".rstrip()) from None

    def _refusal(self, e: urllib.error.HTTPError) -> str:
        try:
            body = json.loads(e.read() or b"{}")
            detail, code = _one_line(str(body.get("detail", ""))), str(body.get("error", ""))
        except (ValueError, AttributeError, OSError):
            detail, code = "", ""
        what = f"HTTP {e.code}" + (f" {code}" if code else f" {e.reason}" if e.reason else "")
        retry = e.headers.get("Retry-After") if e.headers else None
        tail = f"; retry after {retry} s" if retry else ""
        return f"the PSP at {self.server} refused: {detail or 'no reason given'} ({what}){tail}"

    def _json(self, method: str, path: str, body: dict | None = None) -> dict:
        status, headers, data = self._call(method, path, body)
        if status == 204:
            return {}
        try:
            out = json.loads(data)
        except ValueError:
            raise PSPError(f"the PSP at {self.server} answered {path} with something that is not JSON") from None
        if not isinstance(out, dict):
            raise PSPError(f"the PSP at {self.server} answered {path} with unexpected JSON")
        return out

    # --- accounts ------------------------------------------------------------------
    def create_account(self, evidence: dict[str, str] | None = None) -> Account:
        """POST /v1/accounts (no body when there is no evidence) -> the account, token included."""
        out = self._json("POST", "/v1/accounts", {"evidence": evidence} if evidence else None)
        try:
            return Account(self.server, str(out["account_id"]), str(out["token"]), str(out["expires_at"]))
        except KeyError as e:
            raise PSPError(f"the PSP at {self.server} answered without {e.args[0]!r}") from None

    def account(self) -> dict:
        return self._json("GET", "/v1/account")

    def rotate_token(self) -> tuple[str, str]:
        out = self._json("POST", "/v1/tokens/rotate")
        return str(out["token"]), str(out["expires_at"])

    def revoke_token(self) -> None:
        self._call("DELETE", "/v1/tokens/current")

    # --- MaskNets -----------------------------------------------------------------------
    def issue(self, fmt: str | None = None, precision: str | None = None, shape: str | None = None) -> dict:
        body = {k: v for k, v in (("format", fmt), ("precision", precision), ("shape", shape)) if v}
        return self._json("POST", "/v1/masknets", body or None)

    def net(self, model_id: str) -> dict:
        return self._json("GET", f"/v1/masknets/{urllib.parse.quote(model_id, safe='')}")

    def rotate(self, model_id: str, fmt: str | None = None, precision: str | None = None,
               shape: str | None = None) -> dict:
        """Issue a new net and retire ``model_id`` (atomically, on the PSP) -> the new net."""
        body = {k: v for k, v in (("format", fmt), ("precision", precision), ("shape", shape)) if v}
        return self._json("POST", f"/v1/masknets/{urllib.parse.quote(model_id, safe='')}/rotate", body or None)

    def download(self, net: dict) -> tuple[str, bytes]:
        """The net's file -> (file name, bytes), sha256 checked against the header and the net's record."""
        if not net.get("download"):
            raise PSPError(f"MaskNet {net.get('model_id')} can no longer be downloaded (retired)")
        _, headers, data = self._call("GET", str(net["download"]))
        got = hashlib.sha256(data).hexdigest()
        sent = headers.get("x-content-sha256", "").lower()
        if not sent:
            raise PSPError(f"the PSP at {self.server} sent the model without an X-Content-SHA256 header")
        if got != sent or got != str(net.get("sha256", "")).lower():
            raise PSPError(f"downloaded model {net.get('model_id')} is corrupt: sha256 {got[:16]}… but the PSP "
                           f"says {sent[:16]}… (nothing written)")
        return _file_name(headers.get("content-disposition", ""), net), data


def _file_name(disposition: str, net: dict) -> str:
    """The server's attachment name if it is a plain file name, else ``<model_id>.<format>``."""
    m = re.search(r'filename="?([^";]+)"?', disposition)
    name = m.group(1).strip() if m else ""
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        name = f"{net.get('model_id', 'masknet')}.{net.get('format', 'onnx')}"
        if not _SAFE_NAME.match(name):
            raise PSPError("the PSP sent a model without a usable file name")
    return name


def manifest_row(name: str, data: bytes, net: dict, server: str) -> dict:
    """The manifest.jsonl row of a fetched model (the exporter's fields, plus where it came from)."""
    return {"file": name, "model_id": net.get("model_id"), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "sha256_of": "file", "format": net.get("format"), "precision": net.get("precision"),
            "shape": net.get("shape"), "structure": net.get("structure"), "spec_digest": net.get("spec_digest"),
            "checkpoint_sha256": net.get("hypernet_sha256"), "method": net.get("method"), "server": server,
            "issued_at": net.get("issued_at")}


def save_model(out_dir: Path, name: str, data: bytes, row: dict) -> tuple[Path, Path]:
    """Write the model (never over an existing file) and add its row to ``out_dir/manifest.jsonl``
    (rewritten atomically; a previous row for the same file name is replaced)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dst, manifest = out_dir / name, out_dir / MANIFEST
    if dst.exists():
        raise PSPError(f"{dst} exists already; not overwritten")
    rows = []
    if manifest.exists():
        try:
            rows = [json.loads(l) for l in manifest.read_text().splitlines() if l.strip()]
        except (OSError, ValueError) as e:
            raise PSPError(f"cannot read {manifest} ({type(e).__name__}); nothing written") from None
    rows = [r for r in rows if not (isinstance(r, dict) and r.get("file") == name)] + [row]
    _write_atomic(dst, data, default_file_mode())
    try:
        _write_atomic(manifest, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode(),
                      default_file_mode())
    except OSError:
        dst.unlink(missing_ok=True)  # a model without its manifest row would not pass `protect --manifest`
        raise
    return dst, manifest
