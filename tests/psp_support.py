"""Helpers shared by the PSP tests (tests/test_psp_*.py import from here; the fixtures psp_engine
and db_url are in conftest.py).

Databases: a fresh SQLite file per test, and — when $HYPEROBF_TEST_PG_URL is set (see
scripts/ci_postgres.sh) — a freshly emptied PostgreSQL schema per test; otherwise the
PostgreSQL cases skip with the reason the script reported (or that no URL was set).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import pytest
from cryptography.fernet import Fernet

BACKENDS = ["sqlite", "postgresql"]


def pg_url_or_skip() -> str:
    url = os.environ.get("HYPEROBF_TEST_PG_URL")
    if not url:
        reason = os.environ.get("HYPEROBF_TEST_PG_SKIP_REASON") or \
            "HYPEROBF_TEST_PG_URL is not set (run: eval \"$(bash scripts/ci_postgres.sh)\")"
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    return url


def reset_pg(url: str) -> None:
    """Empty the test database: drop and recreate the public schema (the test role owns it)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    except OperationalError as e:
        pytest.skip(f"PostgreSQL at HYPEROBF_TEST_PG_URL is not reachable: {str(e.orig).splitlines()[0]}")
    finally:
        engine.dispose()


def db_url_for(backend: str, tmp_path) -> str:  # noqa: ANN001
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'psp.db'}"
    url = pg_url_or_skip()
    reset_pg(url)
    return url


def make_service(psp_engine, db_url: str, **cfg_changes):  # noqa: ANN001, ANN201
    from hyperobf.psp.api import build_service
    from hyperobf.psp.config import PSPConfig
    from hyperobf.psp.crypto import SecretBox

    z_sampler = cfg_changes.pop("z_sampler", None)
    verifier = cfg_changes.pop("verifier_obj", None)
    cfg = PSPConfig(**{"checkpoint": "(engine given)", "db_url": db_url, "device": "cpu", "max_wait_ms": 2.0,
                       **cfg_changes})
    box = SecretBox([Fernet.generate_key()])
    return build_service(cfg, engine=psp_engine, box=box, verifier=verifier, z_sampler=z_sampler)


@contextmanager
def client_for(service, address: str = "10.0.0.1") -> Iterator:  # noqa: ANN001
    """A TestClient (lifespan running: the batcher thread is up) whose requests come from ``address``."""
    from fastapi.testclient import TestClient

    from hyperobf.psp.api import create_app

    with TestClient(create_app(service), client=(address, 40000)) as c:
        yield c
    service.sessions.kw["bind"].dispose()


def extra_client(app_client, address: str):  # noqa: ANN001, ANN201
    """Another client address against the same running app (no second lifespan)."""
    from fastapi.testclient import TestClient

    return TestClient(app_client.app, client=(address, 40001))


def new_account(c, **evidence) -> dict:  # noqa: ANN001
    r = c.post("/v1/accounts", json={"evidence": evidence})
    assert r.status_code == 201, r.text
    body = r.json()
    body["headers"] = {"Authorization": f"Bearer {body['token']}"}
    return body
