"""PSP storage: SQLAlchemy 2.0 tables and engine creation (SQLite file or PostgreSQL).

The schema is created by Alembic (psp/migrations), never by ``create_all`` in the service:
these classes and the migration must agree (tests/test_psp_db.py compares them).
Times are naive UTC. Secrets never appear in plain text: tokens as sha256, z and model
files as Fernet tokens, client addresses as keyed hashes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Iterator

from sqlalchemy import (Boolean, DateTime, Engine, ForeignKey, Index, Integer, LargeBinary, String, create_engine,
                        event, text)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    subject: Mapped[str] = mapped_column(String(200))  # identity as the verifier reported it
    client_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)

    tokens: Mapped[list["Token"]] = relationship(back_populates="account")
    masknets: Mapped[list["IssuedNet"]] = relationship(back_populates="account")

    __table_args__ = (Index("ix_accounts_client_created", "client_hash", "created_at"),)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    account: Mapped[Account] = relationship(back_populates="tokens")


class IssuedNet(Base):
    """One issued MaskNet file: who, which HyperNet, which bytes, when; its probe fingerprint."""

    __tablename__ = "masknets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    structure: Mapped[str] = mapped_column(String(32))
    spec_digest: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    hypernet_sha256: Mapped[str] = mapped_column(String(64))  # checkpoint file sha256 = HyperNet version
    format: Mapped[str] = mapped_column(String(16))
    precision: Mapped[str] = mapped_column(String(8))
    shape: Mapped[str] = mapped_column(String(8))
    file_sha256: Mapped[str] = mapped_column(String(64))
    file_size: Mapped[int] = mapped_column(Integer)
    file_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # Fernet(model file); None once retired
    z_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # Fernet(z float32); None if not kept
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)  # float16 (fingerprint_dim,), see psp.fingerprint
    probe_version: Mapped[str] = mapped_column(String(64))  # fingerprints compare only within one version
    draws: Mapped[int] = mapped_column(Integer)  # latents drawn until this one was far enough from the rest
    client_hash: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[dt.datetime] = mapped_column(DateTime)
    retired_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    replaced_by: Mapped[str | None] = mapped_column(String(32), nullable=True)

    account: Mapped[Account] = relationship(back_populates="masknets")

    __table_args__ = (
        # covers the per-account limit counts (active and in-window) without reading rows (migration 0002)
        Index("ix_masknets_account_usage", "account_id", "issued_at", "retired_at"),
        Index("ix_masknets_client_issued", "client_hash", "issued_at"),
    )


POOL_SIZE = 16  # connections kept per worker process (+ 8 overflow)
REQUEST_THREADS = 8  # api: anyio pool threads for the sync routes (each holds at most one connection)


def make_engine(url: str) -> Engine:
    """Engine for ``url``; SQLite gets WAL + a busy timeout so threads wait instead of failing."""
    # Pools larger than the request threads plus the batcher that use them at once: a pool smaller
    # than that keeps opening and closing overflow connections under load (each one a PRAGMA round
    # on SQLite, a TCP + SCRAM handshake on PostgreSQL), which cost more CPU than the queries.
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=POOL_SIZE,
                               max_overflow=8)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            dbapi_conn.isolation_level = None  # SQLAlchemy, not pysqlite, emits BEGIN (see below)
            cur = dbapi_conn.cursor()
            # Pages of 16 KiB, not 4: every net's row holds its ~60 KB model file, and a commit
            # writes (and a checkpoint copies) the WAL page by page; 4x fewer pages halve the
            # commit's CPU. Takes effect only while the file is still empty (a new database).
            cur.execute("PRAGMA page_size=16384")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:  # noqa: ANN001
            # A write transaction that reads first (limit counts, then insert) must hold the write
            # lock from the start: a deferred one fails with SQLITE_BUSY_SNAPSHOT when another
            # connection commits between its read and its write.
            immediate = conn.get_execution_options().get("sqlite_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    # (per worker process: N workers hold up to N * (POOL_SIZE + 8) connections; PostgreSQL's
    # default max_connections is 100)
    return create_engine(url, pool_size=POOL_SIZE, max_overflow=8, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


# Transaction-scoped PostgreSQL advisory locks (released at commit/rollback, also when the
# process dies: the server ends the session). Numbers are arbitrary but fixed across versions.
ISSUANCE_LOCK = 0x48_4F_42_01  # recording issued nets: limits, near-duplicate catch-up, id order
REGISTRATION_LOCK = 0x48_4F_42_02  # creating accounts: per-client account limit, unique identities
MIGRATION_LOCK = 0x48_4F_42_03  # Alembic upgrade when several workers start at once


def serialize(s: Session | Connection, key: int) -> None:
    """Serialize this transaction against every other one taking ``key``, in any process.

    PostgreSQL: ``pg_advisory_xact_lock``. Under READ COMMITTED every statement after it sees
    all rows committed by the previous holder, so counts and near-duplicate catch-up are
    exact. SQLite needs nothing: ``write_session`` begins with BEGIN IMMEDIATE, which already
    serializes every writer of the file (across processes too).
    """
    bind = s.get_bind() if isinstance(s, Session) else s
    if bind.dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


@contextlib.contextmanager
def write_session(sessions: sessionmaker) -> Iterator[Session]:
    """A session in a transaction that commits on success and may write (on SQLite it takes
    the write lock up front: BEGIN IMMEDIATE; PostgreSQL ignores the option)."""
    with sessions() as s, s.begin():
        s.connection(execution_options={"sqlite_immediate": True})
        yield s
