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

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .config import PSPConfig
from .db import Account, IssuedNet
from .errors import LimitExceeded


@dataclass
class AccountUsage:
    active: int  # un-retired nets
    issued: int  # nets issued within the account window
    oldest: dt.datetime | None  # oldest of those (when the window frees a slot)


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


def account_usage(s: Session, cfg: PSPConfig, account_id: int, now: dt.datetime) -> AccountUsage:
    since = now - dt.timedelta(seconds=cfg.account_window_s)
    mine = IssuedNet.account_id == account_id
    window = (mine, IssuedNet.issued_at >= since)
    row = s.execute(select(  # one round trip: three scalar subqueries
        select(func.count()).select_from(IssuedNet).where(mine, IssuedNet.retired_at.is_(None)).scalar_subquery(),
        select(func.count()).select_from(IssuedNet).where(*window).scalar_subquery(),
        select(func.min(IssuedNet.issued_at)).where(*window).scalar_subquery(),
    )).one()
    return AccountUsage(int(row[0] or 0), int(row[1] or 0), row[2])


def accounts_usage(s: Session, cfg: PSPConfig, account_ids: list[int], now: dt.datetime) -> dict[int, AccountUsage]:
    """account_usage for several accounts in one GROUP BY query (the batcher's per-batch read)."""
    since = now - dt.timedelta(seconds=cfg.account_window_s)
    in_window = IssuedNet.issued_at >= since
    rows = s.execute(select(
        IssuedNet.account_id, func.count().filter(IssuedNet.retired_at.is_(None)), func.count().filter(in_window),
        func.min(IssuedNet.issued_at).filter(in_window),
    ).where(IssuedNet.account_id.in_(account_ids)).group_by(IssuedNet.account_id)).all()
    out = {a: AccountUsage(0, 0, None) for a in account_ids}
    out.update({r[0]: AccountUsage(int(r[1] or 0), int(r[2] or 0), r[3]) for r in rows})
    return out


def clients_usage(s: Session, cfg: PSPConfig, client_hashes: list[str], now: dt.datetime) -> dict[str, ClientUsage]:
    """client_usage for several client addresses in one GROUP BY query."""
    since = now - dt.timedelta(seconds=cfg.client_window_s)
    rows = s.execute(select(IssuedNet.client_hash, func.count(), func.min(IssuedNet.issued_at)).where(
        IssuedNet.client_hash.in_(client_hashes), IssuedNet.issued_at >= since).group_by(IssuedNet.client_hash)).all()
    out = {c: ClientUsage(0, None) for c in client_hashes}
    out.update({r[0]: ClientUsage(int(r[1] or 0), r[2]) for r in rows})
    return out


def client_usage(s: Session, cfg: PSPConfig, client_hash: str, now: dt.datetime) -> ClientUsage:
    since = now - dt.timedelta(seconds=cfg.client_window_s)
    row = s.execute(select(func.count(), func.min(IssuedNet.issued_at)).where(
        IssuedNet.client_hash == client_hash, IssuedNet.issued_at >= since)).one()
    return ClientUsage(int(row[0] or 0), row[1])


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


def check_issue(s: Session, cfg: PSPConfig, account_id: int, client_hash: str, now: dt.datetime,
                replacing: bool = False) -> None:
    """The request-time pre-check: read the usage and check it."""
    check_usage(cfg, account_usage(s, cfg, account_id, now), client_usage(s, cfg, client_hash, now), now, replacing)


def check_registration(s: Session, cfg: PSPConfig, client_hash: str, now: dt.datetime) -> None:
    """Raise LimitExceeded if this client address created too many accounts in the window."""
    since = now - dt.timedelta(seconds=cfg.client_window_s)
    count, oldest = s.execute(select(func.count(), func.min(Account.created_at)).where(
        Account.client_hash == client_hash, Account.created_at >= since)).one()
    if count >= cfg.max_accounts_per_client:
        raise LimitExceeded(f"account creation limit reached for this client ({cfg.max_accounts_per_client} per "
                            f"{_human(cfg.client_window_s)}); try again later",
                            _retry(oldest, cfg.client_window_s, now))
