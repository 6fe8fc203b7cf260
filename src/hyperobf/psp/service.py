"""The PSP's operations, independent of HTTP: accounts, tokens, issuing, listing, downloading,
rotating and retiring MaskNets. The API module maps each to a route.

Every query about nets is scoped by the caller's account id: another account's net is
indistinguishable from a net that does not exist (404).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

from . import limits
from .batcher import Batcher
from .config import PSPConfig
from .crypto import SecretBox, new_public_id, new_token, token_hash
from .db import REGISTRATION_LOCK, Account, IssuedNet, Token, serialize, utcnow, write_session
from .engine import GenerationEngine, Variant
from .errors import BadRequest, Conflict, Forbidden, Gone, NotFound, Unauthorized, Unavailable
from .issuance import IssueJob, Issuer, token_problem
from .verify import VerificationError, Verifier

log = logging.getLogger("hyperobf.psp")


@dataclass(frozen=True)
class Caller:
    account_id: int
    public_id: str
    token_id: int
    client_hash: str


class PSPService:
    def __init__(self, cfg: PSPConfig, engine: GenerationEngine, sessions: sessionmaker, box: SecretBox,
                 verifier: Verifier, issuer: Issuer) -> None:
        self.cfg, self.engine, self.sessions, self.box, self.verifier = cfg, engine, sessions, box, verifier
        self.issuer = issuer
        self.batcher = Batcher(issuer, cfg.max_batch, cfg.max_wait_ms)

    # --- accounts and tokens ----------------------------------------------------------
    def _new_token(self, s, account_id: int, now: dt.datetime) -> tuple[str, dt.datetime]:  # noqa: ANN001
        token = new_token()
        expires = now + dt.timedelta(days=self.cfg.token_ttl_days)
        s.add(Token(account_id=account_id, token_sha256=token_hash(token), created_at=now, expires_at=expires))
        return token, expires

    def create_account(self, evidence: dict[str, str], client: str) -> tuple[str, str, dt.datetime]:
        """Verify, check the per-client registration limit, create; -> (public id, token, expiry)."""
        client_hash = self.box.client_hash(client)
        try:
            identity = self.verifier.verify(evidence, client)
        except VerificationError as e:
            raise Forbidden(f"verification failed: {e}") from None
        now = utcnow()
        with write_session(self.sessions) as s:
            # one registration at a time across workers: the per-client count and the
            # one-account-per-identity check must see each other's accounts
            serialize(s, REGISTRATION_LOCK)
            limits.check_registration(s, self.cfg, client_hash, now)
            if identity.unique and s.scalar(select(func.count()).select_from(Account).where(
                    Account.subject == identity.subject)):
                raise Conflict("this identity already has an account")
            account = Account(public_id=new_public_id(), subject=identity.subject, client_hash=client_hash,
                              created_at=now, disabled=False)
            s.add(account)
            s.flush()
            token, expires = self._new_token(s, account.id, now)
        log.info("account %s created", account.public_id)
        return account.public_id, token, expires

    def authenticate(self, token: str | None, client: str) -> Caller:
        if not token:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        # plain columns, not ORM objects: this runs on every request
        with self.sessions() as s:
            row = s.execute(select(Token.id, Token.revoked_at, Token.expires_at, Account.id, Account.public_id,
                                   Account.disabled).join(Account, Token.account_id == Account.id).where(
                Token.token_sha256 == token_hash(token))).one_or_none()
        if row is None:
            raise Unauthorized("invalid token")
        token_id, revoked_at, expires_at, account_id, public_id, disabled = row
        problem = token_problem(revoked_at, expires_at, disabled, utcnow())
        if problem is not None:
            raise problem
        return Caller(account_id, public_id, token_id, self.box.client_hash(client))

    def rotate_token(self, caller: Caller) -> tuple[str, dt.datetime]:
        now = utcnow()
        with write_session(self.sessions) as s:
            s.execute(update(Token).where(Token.id == caller.token_id).values(revoked_at=now))
            return self._new_token(s, caller.account_id, now)

    def revoke_token(self, caller: Caller) -> None:
        with write_session(self.sessions) as s:
            s.execute(update(Token).where(Token.id == caller.token_id).values(revoked_at=utcnow()))

    def account(self, caller: Caller) -> dict:
        with self.sessions() as s:
            acc = s.get(Account, caller.account_id)
            total = s.scalar(select(func.count()).select_from(IssuedNet).where(IssuedNet.account_id == acc.id)) or 0
            active = s.scalar(select(func.count()).select_from(IssuedNet).where(
                IssuedNet.account_id == acc.id, IssuedNet.retired_at.is_(None))) or 0
        return {"account_id": acc.public_id, "subject": acc.subject, "created_at": acc.created_at,
                "active_masknets": active, "issued_masknets": total}

    # --- MaskNets ---------------------------------------------------------------------
    def variant(self, format: str | None, precision: str | None, shape: str | None) -> Variant:
        v = Variant((format or self.cfg.default_format).lower(), (precision or self.cfg.default_precision).lower(),
                    (shape or self.cfg.default_shape).lower())
        try:
            self.engine.check_variant(v)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        return v

    def submit_net(self, caller: Caller, variant: Variant, retire: str | None = None) -> IssueJob:
        """Queue an issuance (and the retirement of ``retire``, for rotation). The limits and the
        old net are checked by the batcher, once per micro-batch, before any generation work."""
        return self.batcher.submit(IssueJob(caller.account_id, caller.client_hash, variant, retire))

    def request_net(self, caller: Caller, variant: Variant, retire: str | None = None) -> IssuedNet:
        """Issue a net; blocks until the batch is recorded."""
        job = self.submit_net(caller, variant, retire)
        try:
            row = job.future.result(timeout=self.cfg.request_timeout_s)
        except TimeoutError:
            raise Unavailable("issuance timed out; try again") from None
        return self._issued(caller, row, retire)

    async def issue_with_token(self, token: str, client: str, variant: Variant) -> IssuedNet:
        """POST /v1/masknets on the event loop: the batcher checks the token (one query per
        micro-batch) and the request waits on an event-loop future, woken with the rest of its
        batch by one call from the batcher thread (Batcher.deliver). A request that times out or
        goes away leaves the job to the batcher, which still resolves (and records) it."""
        waiter = asyncio.get_running_loop().create_future()
        job = self.batcher.submit(IssueJob(None, self.box.client_hash(client), variant,
                                           token_sha256=token_hash(token), waiter=waiter))
        try:
            async with asyncio.timeout(self.cfg.request_timeout_s):
                row = await waiter
        except TimeoutError:
            raise Unavailable("issuance timed out; try again") from None
        log.info("masknet %s issued to account %s (draws %d)", row.model_id, job.public_id, row.draws)
        return row

    def _issued(self, caller: Caller, row: IssuedNet, retire: str | None) -> IssuedNet:
        log.info("masknet %s issued to account %s (draws %d)%s", row.model_id, caller.public_id, row.draws,
                 f", replacing {retire}" if retire else "")
        return row

    def _own(self, s, caller: Caller, model_id: str, active: bool = False, lock: bool = False) -> IssuedNet:  # noqa: ANN001
        q = select(IssuedNet).where(IssuedNet.model_id == model_id, IssuedNet.account_id == caller.account_id)
        # lock: the row is about to change (download_once, retire); two workers must not both
        # read it unchanged (PostgreSQL row lock; SQLite's BEGIN IMMEDIATE already serializes)
        row = s.execute(q.with_for_update() if lock else q).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no MaskNet {model_id} on this account")
        if active and row.retired_at is not None:
            raise Conflict(f"MaskNet {model_id} is already retired")
        return row

    def list_nets(self, caller: Caller, include_retired: bool = False) -> list[IssuedNet]:
        with self.sessions() as s:
            q = select(IssuedNet).where(IssuedNet.account_id == caller.account_id)
            if not include_retired:
                q = q.where(IssuedNet.retired_at.is_(None))
            return list(s.execute(q.order_by(IssuedNet.issued_at, IssuedNet.id)).scalars())

    def get_net(self, caller: Caller, model_id: str) -> IssuedNet:
        with self.sessions() as s:
            return self._own(s, caller, model_id)

    def file(self, caller: Caller, model_id: str) -> tuple[IssuedNet, bytes]:
        # a read-only session unless the download consumes the file
        with (write_session(self.sessions) if self.cfg.download_once else self.sessions()) as s:
            row = self._own(s, caller, model_id, lock=self.cfg.download_once)
            if row.file_enc is None:
                why = "it is retired" if row.retired_at else "it was already downloaded (download_once)"
                raise Gone(f"MaskNet {model_id} can no longer be downloaded: {why}")
            data = self.box.decrypt(row.file_enc)
            if hashlib.sha256(data).hexdigest() != row.file_sha256:
                raise RuntimeError("stored model file does not match its recorded sha256")
            if self.cfg.download_once:
                row.file_enc = None
        return row, data

    def retire(self, caller: Caller, model_id: str) -> IssuedNet:
        with write_session(self.sessions) as s:
            row = self._own(s, caller, model_id, active=True, lock=True)
            row.retired_at, row.file_enc = utcnow(), None
        log.info("masknet %s retired by account %s", model_id, caller.public_id)
        return row
