"""`hyperobf account create | token | show` and `hyperobf fetch`: use a PSP without writing HTTP by hand.

Standard library HTTP only (:mod:`hyperobf.psp_client`): these work in the light device install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import errors_as_one_line, fail

account_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="Your account on a PSP: create it (the token is kept in a 0600 file), rotate its token.")

_ACCOUNT_HELP = "Account file (server, account id, token; mode 0600). Default: $HYPEROBF_ACCOUNT or ~/.config/hyperobf/account.json."
AccountFile = Annotated[Optional[Path], typer.Option("--account-file", help=_ACCOUNT_HELP, dir_okay=False)]
Timeout = Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the PSP.")]


def _account_path(path: Optional[Path]) -> Path:
    from ..psp_client import default_account_file

    return path or default_account_file()


def _parse_evidence(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--evidence expects key=value, got {item!r}")
        out[key.strip()] = value
    return out


@account_app.command("create")
def create(
    server: Annotated[str, typer.Option(help="The PSP's address.")] = "http://127.0.0.1:8000",
    evidence: Annotated[Optional[list[str]], typer.Option("--evidence", help="What the PSP's verifier checks, e.g. --evidence invite_code=ABC (repeatable; none for an open PSP).")] = None,
    account_file: AccountFile = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing account file (its account stays on the PSP, but you lose its token).")] = False,
    timeout: Timeout = 60.0,
) -> None:
    """Create an account on a PSP and keep its token (shown once by the PSP) in the account file, mode 0600."""
    from ..psp_client import PSPClient, PSPError

    path = _account_path(account_file)
    if path.exists() and not replace:
        fail(f"an account file exists at {path}: pass --replace to overwrite it, or --account-file for another")
    with errors_as_one_line(PSPError, ValueError, OSError):
        acc = PSPClient(server, timeout=timeout).create_account(_parse_evidence(evidence or []))
        acc.save(path)
    print(f"account {acc.account_id} created on {acc.server}; token saved to {path} (mode 0600, expires {acc.expires_at})")


@account_app.command("token")
def token(
    revoke: Annotated[bool, typer.Option("--revoke", help="Revoke the token instead (and delete the account file).")] = False,
    account_file: AccountFile = None,
    timeout: Timeout = 60.0,
) -> None:
    """Replace the stored token by a new one (the old one stops working), or revoke it."""
    from ..psp_client import Account, PSPClient, PSPError

    path = _account_path(account_file)
    with errors_as_one_line(PSPError, OSError):
        acc = Account.load(path)
        client = PSPClient(acc.server, acc.token, timeout)
        if revoke:
            client.revoke_token()
            path.unlink()
            print(f"token of account {acc.account_id} revoked on {acc.server}; {path} deleted")
            return
        new, expires = client.rotate_token()
        Account(acc.server, acc.account_id, new, expires).save(path)
    print(f"token of account {acc.account_id} replaced; saved to {path} (mode 0600, expires {expires})")


@account_app.command("show")
def show(account_file: AccountFile = None, timeout: Timeout = 60.0) -> None:
    """The account as the PSP sees it: id, subject, active and issued MaskNets."""
    from ..psp_client import Account, PSPClient, PSPError

    with errors_as_one_line(PSPError, OSError):
        acc = Account.load(_account_path(account_file))
        me = PSPClient(acc.server, acc.token, timeout).account()
    print(f"account {me.get('account_id')} on {acc.server}: {me.get('active_masknets')} active MaskNet(s), "
          f"{me.get('issued_masknets')} issued, created {me.get('created_at')}")


def fetch(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the model file and manifest.jsonl.", file_okay=False)] = Path("models"),
    fmt: Annotated[Optional[str], typer.Option("--format", help="Model format (default: the PSP's; see its /v1/info), e.g. onnx.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="Weight precision, e.g. fp32 (default: the PSP's).")] = None,
    shape: Annotated[Optional[str], typer.Option(help="fixed (1x3x112x112) | dynamic (default: the PSP's).")] = None,
    replace: Annotated[Optional[str], typer.Option("--replace", help="Rotate: a new MaskNet replaces this one (model id), which the PSP retires.")] = None,
    model_id: Annotated[Optional[str], typer.Option("--model-id", help="Download this already issued MaskNet again instead of a new one.")] = None,
    account_file: AccountFile = None,
    timeout: Timeout = 60.0,
) -> None:
    """Get a new MaskNet from the PSP: issue, download, check its sha256, write it and its manifest row."""
    from ..psp_client import Account, PSPClient, PSPError, manifest_row, save_model

    if replace and model_id:
        fail("--replace and --model-id exclude each other")
    with errors_as_one_line(PSPError, OSError):
        acc = Account.load(_account_path(account_file))
        client = PSPClient(acc.server, acc.token, timeout)
        if model_id:
            net = client.net(model_id)
        elif replace:
            net = client.rotate(replace, fmt, precision, shape)
        else:
            net = client.issue(fmt, precision, shape)
        name, data = client.download(net)
        dst, manifest = save_model(out, name, data, manifest_row(name, data, net, acc.server))
    if replace:
        print(f"MaskNet {replace} retired on the PSP; re-protect photos with the new one (protect --overwrite)")
    print(f"fetched MaskNet {net.get('model_id')} ({net.get('format')} {net.get('precision')} {net.get('shape')}, "
          f"structure {net.get('structure')}, {len(data)} bytes, sha256 verified) -> {dst}")
    print(f"protect with: hyperobf protect PHOTOS -m {dst} --manifest {manifest}")
