"""ASGI entry point for worker processes: ``hyperobf serve --workers N`` uses it, and so can
uvicorn (or gunicorn with uvicorn workers) directly:

    HYPEROBF_PSP_CONFIG=psp.toml HYPEROBF_PSP_KEY=<fernet key> \\
        uvicorn --factory hyperobf.psp.asgi:app_from_env --workers 4 --host 127.0.0.1 --port 8000

Every worker loads the checkpoint and builds its own service; they share only the database
(PostgreSQL, or one SQLite file), which is where the limits, the near-duplicate check and
id order are enforced (db.serialize). Migrations are locked too, and a key file created by
workers starting at once ends up as one key (crypto.SecretBox.load); with several servers
on several machines, set $HYPEROBF_PSP_KEY on all of them instead of a key file.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from fastapi import FastAPI

CONFIG_ENV = "HYPEROBF_PSP_CONFIG"  # path of a TOML with a [serve] table (for uvicorn/gunicorn users)
RESOLVED_ENV = "HYPEROBF_PSP_SERVE_JSON"  # the resolved PSPConfig, set by `hyperobf serve --workers`
WORKERS_ENV = "HYPEROBF_PSP_WORKERS"  # worker count, to split the CPU threads among them
LOG_ENV = "HYPEROBF_PSP_LOG_LEVEL"


def config_from_env():  # noqa: ANN201 - PSPConfig, imported lazily
    from .config import PSPConfig

    if os.environ.get(RESOLVED_ENV):
        return PSPConfig.from_dict(json.loads(os.environ[RESOLVED_ENV]))
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ValueError(f"set {CONFIG_ENV} to the service's TOML config (a [serve] table)")
    return PSPConfig.from_toml(path)


def split_threads(workers: int) -> None:
    """N workers on C cores: torch gets C // N intra-op threads each (unless OMP_NUM_THREADS is
    set), so workers do not oversubscribe the cores with spinning threads."""
    if workers > 1 and not os.environ.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def app_from_env() -> FastAPI:
    """Build one worker's app from the environment (see the module docstring)."""
    from .api import build_service, create_app

    level = os.environ.get(LOG_ENV, "info").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    split_threads(int(os.environ.get(WORKERS_ENV, "1") or 1))
    return create_app(build_service(config_from_env()))
