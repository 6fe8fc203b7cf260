"""Alembic environment: migrate the connection handed in by hyperobf.psp.migrate, or (for
developers running the alembic CLI) the URL in $HYPEROBF_PSP_DB. Online mode only."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from hyperobf.psp.db import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # noqa: ANN001
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = os.environ.get("HYPEROBF_PSP_DB")
    if not url:
        raise SystemExit("set HYPEROBF_PSP_DB to the database URL to migrate")
    with create_engine(url).connect() as conn:
        _run(conn)
