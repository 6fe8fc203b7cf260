"""Issuing MaskNets for a batch of requests: CSPRNG latents -> one batched HyperNet call ->
probe fingerprints -> re-draw any net too close to an issued one -> render files -> record
them (limits re-checked inside the transaction) -> resolve each request's future.

Runs in the batcher thread only (one at a time per process). Across worker processes the
database is the truth: the fingerprint index catches up from it before every batch, and again
inside the recording transaction, which holds a lock every worker's recording takes (db.serialize):
a net too close to one another worker recorded in between is re-drawn, and the limits are
counted with every other worker's nets in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..export.secrets_z import new_model_id, secure_normal
from . import limits
from .config import PSPConfig
from .crypto import SecretBox
from .db import ISSUANCE_LOCK, Account, IssuedNet, Token, serialize, utcnow, write_session
from .engine import GenerationEngine, TemplateUnavailable, Variant
from .errors import ApiError, Conflict, Forbidden, NotFound, Unauthorized, Unavailable
from .fingerprint import NearestIndex, from_bytes, to_bytes

log = logging.getLogger("hyperobf.psp")

ZSampler = Callable[[int, int], np.ndarray]  # (n, z_dim) -> (n, z_dim) float32

# Statements built once (building a select costs ~10x more CPU than running it), on the tables
# (Core, not ORM entities: no ORM result processing per batch).
_T, _TOK, _ACC = IssuedNet.__table__, Token.__table__, Account.__table__
_AUTH = (select(_TOK.c.token_sha256, _TOK.c.revoked_at, _TOK.c.expires_at, _ACC.c.id, _ACC.c.public_id,
                _ACC.c.disabled).join_from(_TOK, _ACC, _TOK.c.account_id == _ACC.c.id)
         .where(_TOK.c.token_sha256.in_(bindparam("hashes", expanding=True))))
_SYNC = (select(_T.c.id, _T.c.fingerprint).where(_T.c.id > bindparam("last"), _T.c.probe_version == bindparam("v"))
         .order_by(_T.c.id))
_OLD_NETS = (select(_T.c.model_id, _T.c.account_id, _T.c.retired_at)
             .where(_T.c.model_id.in_(bindparam("ids", expanding=True))))
_RETIRE = (update(_T).where(_T.c.model_id == bindparam("old"), _T.c.account_id == bindparam("acct"))
           .values(retired_at=bindparam("at"), replaced_by=bindparam("by"), file_enc=None))
# one multi-row INSERT per batch; ids come back in the rows' order (insertmanyvalues)
_INSERT = insert(_T).returning(_T.c.id, sort_by_parameter_order=True)


@dataclass
class IssueJob:
    account_id: int | None  # None: authenticate ``token_sha256`` in the batch (Issuer._authenticate)
    client_hash: str
    variant: Variant
    retire: str | None = None  # model_id this net replaces (rotation)
    future: Future = field(default_factory=Future)
    token_sha256: str | None = None
    public_id: str = ""  # the account's public id (for the log line)
    waiter: asyncio.Future | None = None  # an async request's event-loop future (Batcher.deliver)
    # filled while processing
    z: np.ndarray | None = None
    weights: dict[str, np.ndarray] | None = None
    fingerprint: np.ndarray | None = None
    draws: int = 0


def token_problem(revoked_at: dt.datetime | None, expires_at: dt.datetime, disabled: bool,
                  now: dt.datetime) -> ApiError | None:
    """Why a known token may not be used (the same answers wherever a token is checked)."""
    if revoked_at is not None or expires_at <= now:
        return Unauthorized("token revoked or expired")
    if disabled:
        return Forbidden("account is disabled")
    return None


@dataclass
class Sealed:
    """A rendered job ready to record: its file hashed and encrypted (outside the lock)."""

    job: IssueJob
    model_id: str
    sha256: str
    size: int
    file_enc: bytes
    z_enc: bytes | None


class Issuer:
    def __init__(self, cfg: PSPConfig, engine: GenerationEngine, sessions: sessionmaker, box: SecretBox,
                 z_sampler: ZSampler = secure_normal) -> None:
        self.cfg = cfg
        self.engine = engine
        self.sessions = sessions
        self.box = box
        self.z_sampler = z_sampler  # tests swap in a sampler that repeats latents
        self.index = NearestIndex(engine.fingerprinter.dim)
        self.version = engine.fingerprinter.version
        self.stats = {"batches": 0, "nets": 0, "redraws": 0, "refused_near_duplicate": 0, "cross_worker_redraws": 0}

    # --- fingerprints of everything issued so far --------------------------------------
    def sync_index(self, s: Session) -> np.ndarray | None:
        """Load the fingerprints recorded since the last sync (by any worker); returns them."""
        rows = s.execute(_SYNC, {"last": self.index.last_id, "v": self.version}).all()
        if not rows:
            return None
        fps = np.stack([from_bytes(r.fingerprint) for r in rows])
        self.index.add(fps, last_id=rows[-1].id)
        return fps

    # --- the batch --------------------------------------------------------------------
    def process(self, jobs: list[IssueJob]) -> None:
        """Resolve every job's future with an IssuedNet row or an ApiError; never raises.

        Jobs whose net turns out, inside the locked recording transaction, to be too close to a
        net another worker recorded meanwhile go round again (fresh latents, same draw budget)."""
        try:
            with self.sessions() as s:
                pending = self._authenticate(s, jobs)  # one token query for the batch
                pending = self._precheck(s, pending)  # refuse what the limits refuse before generating
            if not self.index.last_id:
                with self.sessions() as s:
                    self.sync_index(s)  # the first batch loads everything issued so far, outside the lock
            while pending:
                # the index holds every net up to this worker's last batch (added after its commit);
                # what other workers recorded since is caught up inside the recording lock
                self._draw(pending)
                files = self._render([j for j in pending if not j.future.done()])
                pending = self._record(self._seal(files))
                self.stats["cross_worker_redraws"] += len(pending)
                for j in pending:
                    if j.draws >= self.cfg.max_draws:
                        self._refuse(j)
                pending = [j for j in pending if not j.future.done()]
        except Exception as e:  # noqa: BLE001 - every waiting request must get an answer
            # the type and the database driver's own message, never the statement's parameters
            orig = getattr(e, "orig", None)
            log.error("issuance batch failed: %s%s", type(e).__name__,
                      f" ({str(orig).splitlines()[0]})" if orig is not None and str(orig) else "")
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(Unavailable("issuance failed; try again") if not isinstance(e, ApiError) else e)
        self.stats["batches"] += 1

    def _authenticate(self, s: Session, jobs: list[IssueJob]) -> list[IssueJob]:
        """Resolve the bearer tokens of the jobs that came with one (POST /v1/masknets) in one
        query: the request itself then needs no database round trip and no pool thread."""
        wanted = {j.token_sha256 for j in jobs if j.account_id is None}
        found = {r.token_sha256: r for r in s.execute(_AUTH, {"hashes": list(wanted)})} if wanted else {}
        now, out = utcnow(), []
        for j in jobs:
            if j.account_id is None:
                r = found.get(j.token_sha256)
                problem = token_problem(r.revoked_at, r.expires_at, r.disabled, now) if r else \
                    Unauthorized("invalid token")
                if problem is not None:
                    j.future.set_exception(problem)
                    continue
                j.account_id, j.public_id = r.id, r.public_id
            out.append(j)
        return out

    def _precheck(self, s: Session, jobs: list[IssueJob]) -> list[IssueJob]:
        """The limits (and a rotation's old net), read once for the batch without a lock: jobs
        that would be refused anyway fail now, before any generation work. Returns the rest.
        Only advisory: the recording transaction checks again, under the lock."""
        now = utcnow()
        acct = limits.accounts_usage(s, self.cfg, sorted({j.account_id for j in jobs}), now)
        client = limits.clients_usage(s, self.cfg, sorted({j.client_hash for j in jobs}), now)
        retiring = {j.retire for j in jobs if j.retire}
        old = {r.model_id: r for r in s.execute(_OLD_NETS, {"ids": list(retiring)})} if retiring else {}
        out = []
        for j in jobs:
            try:
                if j.retire:
                    row = old.get(j.retire)
                    if row is None or row.account_id != j.account_id:
                        raise NotFound(f"no MaskNet {j.retire} on this account")
                    if row.retired_at is not None:
                        raise Conflict(f"MaskNet {j.retire} is already retired")
                a, c = acct[j.account_id], client[j.client_hash]
                if a.disabled:
                    raise Forbidden("account is disabled")
                limits.check_usage(self.cfg, a, c, now, replacing=bool(j.retire))
                limits.count_issue(a, c, now, replacing=bool(j.retire))
                out.append(j)
            except ApiError as e:
                j.future.set_exception(e)
        return out

    def _refuse(self, job: IssueJob) -> None:
        self.stats["refused_near_duplicate"] += 1
        log.warning("near-duplicate: no distinct net after %d draws (min distance %.3g)",
                    job.draws, self.cfg.min_distance)
        job.future.set_exception(Unavailable(
            f"could not draw a MaskNet distinct enough from those already issued in {job.draws} "
            "attempts; try again later"))

    def _draw(self, jobs: list[IssueJob]) -> None:
        """Latents for every job, re-drawn (only for the offending jobs) while the net is within
        ``min_distance`` of an issued net or of a net accepted earlier in this batch."""
        pending = list(jobs)
        accepted = NearestIndex(self.index.dim, capacity=len(pending))  # (a batch's worth, not the default 2 MB)
        while pending:
            z = np.asarray(self.z_sampler(len(pending), self.engine.z_dim), np.float32)
            weights, fps = self.engine.generate(z)
            issued = self.index.nearest(fps)  # (len(pending),): one (n, dim) x (dim, N) product for the batch
            retry = []
            for i, job in enumerate(pending):
                job.draws += 1
                d = min(float(issued[i]), float(accepted.nearest(fps[i:i + 1])[0]))
                if d >= self.cfg.min_distance:
                    job.z, job.fingerprint = z[i], fps[i]
                    job.weights = {k: v[i] for k, v in weights.items()}
                    accepted.add(fps[i:i + 1])
                elif job.draws >= self.cfg.max_draws:
                    self._refuse(job)
                else:
                    self.stats["redraws"] += 1
                    retry.append(job)
            pending = retry

    def _render(self, jobs: list[IssueJob]) -> list[tuple[IssueJob, str, bytes]]:
        """Files for the jobs, one batched render per variant; a variant whose template cannot be
        built fails only its own jobs (503)."""
        out = []
        by_variant: dict[Variant, list[IssueJob]] = {}
        for j in jobs:
            by_variant.setdefault(j.variant, []).append(j)
        for variant, group in by_variant.items():
            try:
                renderer = self.engine.renderer(variant)
            except TemplateUnavailable as e:
                for j in group:
                    j.future.set_exception(Unavailable(str(e)))
                continue
            ids = [new_model_id() for _ in group]
            weights = {k: np.stack([j.weights[k] for j in group]) for k in group[0].weights}
            out += zip(group, ids, renderer.render(weights, ids))
        return out

    def _seal(self, files: list[tuple[IssueJob, str, bytes]]) -> list[Sealed]:
        """Hash and encrypt every file (and z) before the recording transaction: the lock that
        serializes recording across workers is then held only for the SQL."""
        keep_z = self.cfg.z_storage == "encrypted"
        return [Sealed(job, model_id, hashlib.sha256(data).hexdigest(), len(data), self.box.encrypt(data),
                       self.box.encrypt(job.z.astype(np.float32).tobytes()) if keep_z else None)
                for job, model_id, data in files]

    def _record(self, sealed: list[Sealed]) -> list[IssueJob]:
        """Record the batch in one transaction (one multi-row INSERT); returns the jobs to re-draw
        (too close to a net another worker recorded after this batch's index sync)."""
        now = utcnow()
        accepted: list[tuple[IssueJob, dict]] = []
        redraw: list[IssueJob] = []
        new_ids: list[int] = []
        with write_session(self.sessions) as s:
            # One issuance transaction at a time across every worker process (PostgreSQL advisory
            # lock; SQLite's BEGIN IMMEDIATE already is one): per-account AND per-client counts,
            # the near-duplicate catch-up below, and ids allocated in commit order (sync_index
            # reads "id > last_id": an id committed out of order would never be loaded).
            serialize(s, ISSUANCE_LOCK)
            news = self.sync_index(s)  # what other workers recorded since this worker's last batch
            if news is not None and sealed and self.cfg.min_distance > 0:
                fresh = NearestIndex(self.index.dim, capacity=len(news))
                fresh.add(news)
                d = fresh.nearest(np.stack([x.job.fingerprint for x in sealed]))
                keep = []
                for x, dist in zip(sealed, d):
                    (keep if float(dist) >= self.cfg.min_distance else redraw).append(x)
                sealed = keep
            usage: dict = {}  # per account / client: read once per batch, then counted forward
            ids = sorted({x.job.account_id for x in sealed})
            if ids:
                usage.update({("account", a): u for a, u in limits.accounts_usage(s, self.cfg, ids, now).items()})
                clients = sorted({x.job.client_hash for x in sealed})
                usage.update({("client", c): u for c, u in limits.clients_usage(s, self.cfg, clients, now).items()})
            for x in sealed:
                try:  # every check raises before this job writes anything: no savepoint needed
                    accepted.append((x.job, self._check_one(s, usage, x, now)))
                except ApiError as e:
                    x.job.future.set_exception(e)
            if accepted:
                new_ids = list(s.execute(_INSERT, [v for _, v in accepted]).scalars())
        # Only after the commit is a net really issued. Its fingerprint joins the index now: the
        # lock was held from the catch-up to the commit, so no other worker's id lies in between.
        done = [(job, IssuedNet(id=i, **v)) for (job, v), i in zip(accepted, new_ids)]
        if done:
            stored = np.stack([from_bytes(r.fingerprint) for _, r in done])  # as stored (float16), as others load it
            self.index.add(stored, last_id=max(new_ids))
        for job, row in done:
            self.stats["nets"] += 1
            job.future.set_result(row)
        return [x.job for x in redraw]

    def _check_one(self, s: Session, usage: dict, x: Sealed, now: dt.datetime) -> dict:
        """Check one net against the limits (and retire the net it replaces); -> its row's values."""
        job = x.job
        acct, client = usage[("account", job.account_id)], usage[("client", job.client_hash)]
        if acct.disabled:
            raise Forbidden("account is disabled")
        if job.retire:  # (a net retired earlier in this transaction reads as retired)
            old = s.execute(_OLD_NETS, {"ids": [job.retire]}).first()
            if old is None or old.account_id != job.account_id:
                raise NotFound(f"no MaskNet {job.retire} on this account")
            if old.retired_at is not None:
                raise Conflict(f"MaskNet {job.retire} is already retired")
        limits.check_usage(self.cfg, acct, client, now, replacing=bool(job.retire))
        spec = self.engine.spec
        values = dict(
            model_id=x.model_id, account_id=job.account_id, structure=spec.name, spec_digest=self.engine.spec_digest,
            method=self.engine.method, hypernet_sha256=self.engine.hypernet_sha256, format=job.variant.format,
            precision=job.variant.precision, shape=job.variant.shape, file_sha256=x.sha256, file_size=x.size,
            file_enc=x.file_enc, z_enc=x.z_enc, fingerprint=to_bytes(job.fingerprint), probe_version=self.version,
            draws=job.draws, client_hash=job.client_hash, issued_at=now, retired_at=None, replaced_by=None,
        )
        if job.retire:
            s.execute(_RETIRE, {"old": job.retire, "acct": job.account_id, "at": now, "by": x.model_id})
        limits.count_issue(acct, client, now, replacing=bool(job.retire))
        return values
