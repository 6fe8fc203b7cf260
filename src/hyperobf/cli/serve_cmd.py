"""`hyperobf serve`: run the Privacy Service Provider HTTP API (or only migrate its database)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import errors_as_one_line, fail

DEFAULT_DB = "sqlite:///psp.db"
# Idle keep-alive connections are closed after this long. uvicorn's 5 s made a pooled client
# connection, idle for a few seconds under load, race the server's close: one request in ~3,000
# failed with a connection reset in the 60 s load test. Longer than common proxies' 60 s idle timeout.
KEEP_ALIVE_S = 75


def _default_key_file(db_url: str) -> str:
    """Beside a SQLite file (psp.db -> psp.db.key); other databases need an explicit key."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return url.database + ".key"
    return ""


def serve(
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Trained HyperNet checkpoint.pt.", dir_okay=False)] = None,
    db: Annotated[Optional[str], typer.Option("--db", help=f"SQLAlchemy URL (default {DEFAULT_DB}; postgresql+psycopg://user:pw@host/db).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default; terminate TLS in a proxy).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 8000,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML with a \\[serve] table (psp.config.PSPConfig fields).", exists=True, dir_okay=False)] = None,
    key_file: Annotated[Optional[Path], typer.Option(help="Fernet key file (created 0600 if absent); $HYPEROBF_PSP_KEY wins.", dir_okay=False)] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (CUDA when available) | cpu | cuda: HyperNet and probe evaluation.  [default: auto]")] = None,
    migrate_only: Annotated[bool, typer.Option("--migrate-only", help="Apply database migrations and exit.")] = False,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error.")] = "info",
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", metavar="ORIGIN", help="Allow a web client on this origin (https://app.example[:port]) to call the API from a page; repeatable. Default: none.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=256, help="Worker processes (uvicorn) sharing the database; limits and the near-duplicate check hold across them.")] = 1,
) -> None:
    """Serve per-user MaskNets over HTTP: accounts, tokens, issue / download / rotate / list (OpenAPI at /docs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, OperationalError

    from ..psp.config import PSPConfig

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        fail(f"unknown --log-level {log_level!r}")
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))  # its per-plugin INFO lines are noise
    with errors_as_one_line(ValueError, FileNotFoundError, PermissionError, ArgumentError):
        overrides = dict(checkpoint=str(checkpoint) if checkpoint else None, db_url=db,
                         key_file=str(key_file) if key_file else None, device=device,
                         cors_origins=tuple(cors_origin) if cors_origin else None)
        cfg = PSPConfig.from_toml(config, **overrides) if config else PSPConfig.from_dict(
            {k: v for k, v in overrides.items() if v is not None})
        if not cfg.key_file:
            cfg = cfg.with_(key_file=_default_key_file(cfg.db_url))
        shown_db = make_url(cfg.db_url).render_as_string(hide_password=True)
    try:
        if migrate_only:
            from ..psp.db import make_engine
            from ..psp.migrate import upgrade

            with errors_as_one_line(ValueError, ArgumentError):
                rev = upgrade(make_engine(cfg.db_url))
            print(f"database {shown_db} at revision {rev}")
            return
        if not cfg.checkpoint:
            fail("--checkpoint is required (unless --migrate-only)")
        if not Path(cfg.checkpoint).is_file():
            fail(f"checkpoint not found: {cfg.checkpoint}")
        if workers > 1:
            _serve_workers(cfg, host, port, workers, log_level, shown_db)
            return
        from ..psp.api import build_service, create_app

        with errors_as_one_line(ValueError, FileNotFoundError, PermissionError, ArgumentError, ImportError):
            service = build_service(cfg)
    except OperationalError as e:
        fail(f"cannot use database {shown_db}: {str(e.orig).splitlines()[0] if e.orig else type(e).__name__}")
    import uvicorn

    logging.getLogger("hyperobf.psp").info(
        "serving %s HyperNet %s on http://%s:%d (db %s)", service.engine.spec.name,
        service.engine.hypernet_sha256[:12], host, port, shown_db)
    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level.lower(),
                timeout_keep_alive=KEEP_ALIVE_S)


def _serve_workers(cfg, host: str, port: int, workers: int, log_level: str, shown_db: str) -> None:  # noqa: ANN001
    """Several uvicorn worker processes, each building its own service from the resolved config.

    What can fail is checked here first, once, with one-line errors: the checkpoint loads, the
    database migrates, the key exists (created now if it is a new key file, so the workers all
    read the same one). The workers then start from hyperobf.psp.asgi:app_from_env."""
    import json
    import os

    import uvicorn
    from sqlalchemy.exc import ArgumentError

    from ..psp import asgi
    from ..psp.crypto import SecretBox
    from ..psp.db import make_engine
    from ..psp.migrate import upgrade
    from ..train.checkpoint import load_checkpoint

    with errors_as_one_line(ValueError, FileNotFoundError, PermissionError, ArgumentError, ImportError):
        loaded = load_checkpoint(cfg.checkpoint)
        if loaded.config.method == "static":
            raise ValueError("a static (one-net) checkpoint cannot issue per-user MaskNets; use a HyperNet")
        SecretBox.load(cfg.key_file)
        db = make_engine(cfg.db_url)
        upgrade(db)
        db.dispose()
    del loaded
    os.environ[asgi.RESOLVED_ENV] = json.dumps(cfg.to_dict())
    os.environ[asgi.WORKERS_ENV] = str(workers)
    os.environ[asgi.LOG_ENV] = log_level
    logging.getLogger("hyperobf.psp").info("serving on http://%s:%d with %d workers (db %s)", host, port, workers,
                                           shown_db)
    uvicorn.run("hyperobf.psp.asgi:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level.lower(), timeout_keep_alive=KEEP_ALIVE_S)
