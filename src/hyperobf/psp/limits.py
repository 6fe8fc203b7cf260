"""Issuance and registration limits, counted in the database (so they hold across processes
and restarts). The thesis's strongest attacker registers many devices to collect MaskNets
(§5.4): per-account limits bound what one account collects, per-client-address limits bound
how many accounts and nets one address collects.

Called twice per request: a cheap pre-check in the request thread (refuse before any
generation work) and the authoritative check inside the transaction that records the net.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .config import PSPConfig
from .db import Account, IssuedNet
from .errors import LimitExceeded


def _human(seconds: float) -> str:
    if seconds % 86400 == 0:
        d = int(seconds // 86400)
        return "day" if d == 1 else f"{d} days"
    if seconds % 3600 == 0:
        h = int(seconds // 3600)
        return "hour" if h == 1 else f"{h} hours"
    return f"{seconds:g} s"


def _count_since(s: Session, column, time_column, key, since: dt.datetime) -> tuple[int, dt.datetime | None]:  # noqa: ANN001
    row = s.execute(select(func.count(), func.min(time_column)).where(column == key, time_column >= since)).one()
    return int(row[0]), row[1]


def check_issue(s: Session, cfg: PSPConfig, account_id: int, client_hash: str, now: dt.datetime,
                replacing: bool = False) -> None:
    """Raise LimitExceeded if this account / client may not receive another net now.
    ``replacing``: a rotation retires one active net, so it does not raise the active count."""
    active = s.scalar(select(func.count()).select_from(IssuedNet).where(
        IssuedNet.account_id == account_id, IssuedNet.retired_at.is_(None))) or 0
    if active - int(replacing) >= cfg.max_active_per_account:
        raise LimitExceeded(f"account already holds {active} active MaskNet(s) (limit "
                            f"{cfg.max_active_per_account}); rotate or retire one instead")
    for column, key, limit, window, what in (
        (IssuedNet.account_id, account_id, cfg.max_issued_per_account, cfg.account_window_s, "per-account issuance"),
        (IssuedNet.client_hash, client_hash, cfg.max_issued_per_client, cfg.client_window_s, "per-client issuance"),
    ):
        since = now - dt.timedelta(seconds=window)
        count, oldest = _count_since(s, column, IssuedNet.issued_at, key, since)
        if count >= limit:
            retry = (oldest + dt.timedelta(seconds=window) - now).total_seconds() if oldest else window
            raise LimitExceeded(f"{what} limit reached ({limit} per {_human(window)}); try again later", retry)


def check_registration(s: Session, cfg: PSPConfig, client_hash: str, now: dt.datetime) -> None:
    """Raise LimitExceeded if this client address created too many accounts in the window."""
    since = now - dt.timedelta(seconds=cfg.client_window_s)
    count, oldest = _count_since(s, Account.client_hash, Account.created_at, client_hash, since)
    if count >= cfg.max_accounts_per_client:
        retry = (oldest + dt.timedelta(seconds=cfg.client_window_s) - now).total_seconds() if oldest else None
        raise LimitExceeded(f"account creation limit reached for this client ({cfg.max_accounts_per_client} per "
                            f"{_human(cfg.client_window_s)}); try again later", retry)
