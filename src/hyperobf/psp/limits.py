"""Issuance and registration limits, counted in the database (so they hold across processes
and restarts). The thesis's strongest attacker registers many devices to collect MaskNets
(§5.4): per-account limits bound what one account collects, per-client-address limits bound
how many accounts and nets one address collects.

Checked twice per request, both times per micro-batch: a pre-check before any generation work
(one read of the batch's accounts and clients) and the authoritative check inside the
transaction that records the nets. Each time the usage of every account / client of the batch
is read in one GROUP BY query and then counted forward in memory as the batch's nets are
checked or recorded (the recording transaction holds the lock, see issuance).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from .config import PSPConfig
from .db import Account, IssuedNet
from .errors import LimitExceeded


@dataclass
class AccountUsage:
    active: int  # un-retired nets
    issued: int  # nets issued within the account window
    oldest: dt.datetime | None  # oldest of those (when the window frees a slot)
    disabled: bool = False  # the account is disabled (or gone): it may not be issued anything


@dataclass
class ClientUsage:
    issued: int  # nets issued to this client address within the client window
    oldest: dt.datetime | None


def _human(seconds: float) -> str:
    if seconds % 86400 == 0:
        d = int(seconds // 86400)
        return "day" if d == 1 else f"{d} days"
    if seconds % 3600 == 0:
        h = int(seconds // 3600)
        return "hour" if h == 1 else f"{h} hours"
    return f"{seconds:g} s"


_T, _A = IssuedNet.__table__, Account.__table__
_SINCE = bindparam("since")
# Built once: constructing a select costs ~10x more CPU than executing it (SQLAlchemy still
# caches the compiled SQL by the statement's key). Counts use account_id / issued_at, which the
# covering index ix_masknets_account_usage holds, so neither database reads the (blob) rows.
_ACCOUNTS_USAGE = (
    select(_A.c.id, _A.c.disabled, func.count(_T.c.account_id).filter(_T.c.retired_at.is_(None)),
           func.count(_T.c.account_id).filter(_T.c.issued_at >= _SINCE),
           func.min(_T.c.issued_at).filter(_T.c.issued_at >= _SINCE))
    .select_from(_A.outerjoin(_T, _T.c.account_id == _A.c.id))
    .where(_A.c.id.in_(bindparam("ids", expanding=True))).group_by(_A.c.id, _A.c.disabled))
_CLIENTS_USAGE = (
    select(_T.c.client_hash, func.count(), func.min(_T.c.issued_at))
    .where(_T.c.client_hash.in_(bindparam("hashes", expanding=True)), _T.c.issued_at >= _SINCE)
    .group_by(_T.c.client_hash))


def accounts_usage(s: Session, cfg: PSPConfig, account_ids: list[int], now: dt.datetime) -> dict[int, AccountUsage]:
    """Usage of several accounts in one GROUP BY query (the batcher's per-batch read), with each
    account's disabled flag; an account id that does not exist comes back disabled."""
    since = now - dt.timedelta(seconds=cfg.account_window_s)
    out = {a: AccountUsage(0, 0, None, disabled=True) for a in account_ids}
    for r in s.execute(_ACCOUNTS_USAGE, {"ids": account_ids, "since": since}):
        out[r[0]] = AccountUsage(int(r[2] or 0), int(r[3] or 0), r[4], disabled=bool(r[1]))
    return out


def clients_usage(s: Session, cfg: PSPConfig, client_hashes: list[str], now: dt.datetime) -> dict[str, ClientUsage]:
    """Usage of several client addresses in one GROUP BY query."""
    since = now - dt.timedelta(seconds=cfg.client_window_s)
    out = {c: ClientUsage(0, None) for c in client_hashes}
    out.update({r[0]: ClientUsage(int(r[1] or 0), r[2])
                for r in s.execute(_CLIENTS_USAGE, {"hashes": client_hashes, "since": since})})
    return out


def _retry(oldest: dt.datetime | None, window_s: float, now: dt.datetime) -> float:
    return (oldest + dt.timedelta(seconds=window_s) - now).total_seconds() if oldest else window_s


def check_usage(cfg: PSPConfig, acct: AccountUsage, client: ClientUsage, now: dt.datetime,
                replacing: bool = False) -> None:
    """Raise LimitExceeded if one more net would break a limit. ``replacing``: a rotation retires
    one active net, so it does not raise the active count."""
    if acct.active - int(replacing) >= cfg.max_active_per_account:
        raise LimitExceeded(f"account already holds {acct.active} active MaskNet(s) (limit "
                            f"{cfg.max_active_per_account}); rotate or retire one instead")
    if acct.issued >= cfg.max_issued_per_account:
        raise LimitExceeded(f"per-account issuance limit reached ({cfg.max_issued_per_account} per "
                            f"{_human(cfg.account_window_s)}); try again later",
                            _retry(acct.oldest, cfg.account_window_s, now))
    if client.issued >= cfg.max_issued_per_client:
        raise LimitExceeded(f"per-client issuance limit reached ({cfg.max_issued_per_client} per "
                            f"{_human(cfg.client_window_s)}); try again later",
                            _retry(client.oldest, cfg.client_window_s, now))


def count_issue(acct: AccountUsage, client: ClientUsage, now: dt.datetime, replacing: bool) -> None:
    """Account for one more recorded net (in memory, within the recording transaction)."""
    acct.active += 0 if replacing else 1
    acct.issued += 1
    acct.oldest = acct.oldest or now
    client.issued += 1
    client.oldest = client.oldest or now


def check_registration(s: Session, cfg: PSPConfig, client_hash: str, now: dt.datetime) -> None:
    """Raise LimitExceeded if this client address created too many accounts in the window."""
    since = now - dt.timedelta(seconds=cfg.client_window_s)
    count, oldest = s.execute(select(func.count(), func.min(Account.created_at)).where(
        Account.client_hash == client_hash, Account.created_at >= since)).one()
    if count >= cfg.max_accounts_per_client:
        raise LimitExceeded(f"account creation limit reached for this client ({cfg.max_accounts_per_client} per "
                            f"{_human(cfg.client_window_s)}); try again later",
                            _retry(oldest, cfg.client_window_s, now))
