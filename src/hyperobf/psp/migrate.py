"""Schema migrations: run the packaged Alembic scripts (psp/migrations) against an engine.

The service calls :func:`upgrade` on start-up (and ``hyperobf serve --migrate-only`` only
that). No alembic.ini is needed at run time: the config is built here and the engine's
connection is handed to env.py, so database passwords never pass through ini interpolation.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from .db import MIGRATION_LOCK, serialize

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the database to ``revision`` (idempotent); returns the revision now current.

    Safe when several workers start at once: the upgrade runs under a lock (PostgreSQL
    advisory lock; SQLite BEGIN IMMEDIATE), so the second worker finds the schema current."""
    cfg = _config()
    with engine.execution_options(sqlite_immediate=True).begin() as conn:
        serialize(conn, MIGRATION_LOCK)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def downgrade(engine: Engine, revision: str = "base") -> str | None:
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    return current_revision(engine)
