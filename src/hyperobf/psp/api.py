"""The PSP HTTP API (FastAPI; OpenAPI at /openapi.json, docs at /docs).

Routes map one-to-one onto :class:`PSPService` operations. Every error is JSON
``{"error": code, "detail": one line}`` with a 4xx status for anything the client can fix;
unexpected failures are a bare 500 whose log line names the exception type only (no
request bodies, tokens or latents are ever logged).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from typing import Annotated, Iterator

import anyio.to_thread
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..model_formats import SHAPES
from ..protection import status_line
from .config import PSPConfig
from .crypto import SecretBox
from .db import REQUEST_THREADS, IssuedNet, make_engine, make_sessionmaker
from .engine import GenerationEngine, Variant
from .errors import ApiError, Unauthorized
from .issuance import Issuer, ZSampler
from .migrate import upgrade
from .schemas import (AccountCreate, AccountCreated, AccountOut, ErrorBody, FormatOffer, MaskNetList, MaskNetOut,
                      MaskNetRequest, ServiceInfo, TokenOut)
from .service import Caller, PSPService
from .verify import Verifier, build_verifier, describe_verifier

log = logging.getLogger("hyperobf.psp")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # line breaks and other control characters


def _one_line(text: str, limit: int = 300) -> str:
    """A client-facing detail as one printable line of bounded length."""
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 410, 422, 429, 503)}


def build_service(cfg: PSPConfig, *, engine: GenerationEngine | None = None, box: SecretBox | None = None,
                  verifier: Verifier | None = None, z_sampler: ZSampler | None = None) -> PSPService:
    """Migrate the database and assemble the service (ValueError/FileNotFoundError on bad config)."""
    if engine is None:
        if not cfg.checkpoint:
            raise ValueError("no checkpoint given (--checkpoint)")
        engine = GenerationEngine.from_checkpoint(cfg.checkpoint, cfg.device, probe_images=cfg.probe_images,
                                                  probe_size=cfg.probe_size, fingerprint_dim=cfg.fingerprint_dim)
    # the default variant's template is built now, not on the first request
    engine.renderer(Variant(cfg.default_format, cfg.default_precision, cfg.default_shape))
    box = box or SecretBox.load(cfg.key_file)
    verifier = verifier or build_verifier(cfg)
    db = make_engine(cfg.db_url)
    upgrade(db)
    sessions = make_sessionmaker(db)
    issuer = Issuer(cfg, engine, sessions, box, **({"z_sampler": z_sampler} if z_sampler else {}))
    return PSPService(cfg, engine, sessions, box, verifier, issuer)


def _utc(t: dt.datetime | None) -> dt.datetime | None:
    """Stored times are naive UTC; the API says so (ISO 8601 with +00:00)."""
    return t.replace(tzinfo=dt.UTC) if t is not None else None


def _net_out(row: IssuedNet) -> MaskNetOut:
    return MaskNetOut(
        model_id=row.model_id, format=row.format, precision=row.precision, shape=row.shape, structure=row.structure,
        spec_digest=row.spec_digest, method=row.method, hypernet_sha256=row.hypernet_sha256, sha256=row.file_sha256,
        size=row.file_size, issued_at=_utc(row.issued_at), retired_at=_utc(row.retired_at), replaced_by=row.replaced_by,
        download=f"/v1/masknets/{row.model_id}/file" if row.file_enc is not None else None)


def _client(request: Request) -> str:
    # behind a reverse proxy run uvicorn with --proxy-headers/--forwarded-allow-ips so this is the real client
    return request.client.host if request.client else "unknown"


_bearer = HTTPBearer(auto_error=False, description="Token from POST /v1/accounts (shown once).")


def _caller(request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    service: PSPService = request.app.state.service
    return service.authenticate(cred.credentials if cred else None, _client(request))


# Module level (not inside create_app): route annotations are strings under `from __future__
# import annotations`, and FastAPI resolves them in this module's globals.
Auth = Annotated[Caller, Depends(_caller)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def create_app(service: PSPService) -> FastAPI:
    cfg = service.cfg

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> Iterator[None]:
        # Sync routes run in anyio's thread pool. Few threads: issuance waits on the event loop, and
        # 32 threads contending for the GIL cost ~40 % more CPU per request than 4-8 (measured on
        # GET /v1/account at concurrency 32)
        anyio.to_thread.current_default_thread_limiter().total_tokens = REQUEST_THREADS
        log.info("verifier %s", describe_verifier(service.verifier, cfg))
        service.batcher.start()
        try:
            yield
        finally:
            service.batcher.stop()

    app = FastAPI(title="HyperObf Privacy Service Provider", version=__version__, lifespan=lifespan,
                  description="Issues each verified user a unique MaskNet generated by a HyperNet.")
    app.state.service = service
    if cfg.cors_origins:  # a web client on another origin (web/): download and issue from the page
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["X-Content-SHA256", "Content-Disposition"], max_age=600)

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, e: ApiError) -> JSONResponse:
        # details may quote what the client sent (a model id from the path): one printable line
        return JSONResponse({"error": e.code, "detail": _one_line(e.detail)}, status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        # the location may hold client-chosen keys (evidence's)
        return JSONResponse({"error": "invalid_request", "detail": _one_line(f"{where}: {first.get('msg', 'invalid')}")},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return JSONResponse({"error": code, "detail": str(e.detail)}, status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(_req: Request, e: Exception) -> JSONResponse:
        log.error("internal error: %s", type(e).__name__)
        return JSONResponse({"error": "internal", "detail": "internal error"}, status_code=500)

    @app.get("/v1/health", tags=["service"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info", response_model=ServiceInfo, tags=["service"])
    def info() -> ServiceInfo:
        eng = service.engine
        return ServiceInfo(
            structure=eng.spec.name, method=eng.method, hypernet_sha256=eng.hypernet_sha256,
            formats=[FormatOffer(format=f, precisions=list(p), shapes=list(SHAPES))
                     for f, p in eng.offered().items()],
            verifier=cfg.verifier if cfg.verifier in ("open", "invite") else "custom", min_distance=cfg.min_distance,
            protection=status_line(eng.protection), protection_record=eng.protection,
            limits={k: float(getattr(cfg, k)) for k in (
                "max_active_per_account", "max_issued_per_account", "account_window_s", "max_issued_per_client",
                "max_accounts_per_client", "client_window_s")})

    @app.post("/v1/accounts", response_model=AccountCreated, status_code=201, tags=["accounts"], responses=_ERRORS)
    def create_account(request: Request, body: AccountCreate | None = None) -> AccountCreated:
        """Verify the evidence and create an account; the bearer token is returned once.
        The body may be left out (no evidence: what the open verifier needs)."""
        public_id, token, expires = service.create_account(body.evidence if body else {}, _client(request))
        return AccountCreated(account_id=public_id, token=token, expires_at=_utc(expires))

    @app.get("/v1/account", response_model=AccountOut, tags=["accounts"], responses=_ERRORS)
    def me(c: Auth) -> AccountOut:
        acc = service.account(c)
        return AccountOut(**{**acc, "created_at": _utc(acc["created_at"])})

    @app.post("/v1/tokens/rotate", response_model=TokenOut, status_code=201, tags=["accounts"], responses=_ERRORS)
    def rotate_token(c: Auth) -> TokenOut:
        """Replace the calling token by a new one (the old one stops working)."""
        token, expires = service.rotate_token(c)
        return TokenOut(token=token, expires_at=_utc(expires))

    @app.delete("/v1/tokens/current", status_code=204, tags=["accounts"], responses=_ERRORS)
    def revoke_token(c: Auth) -> Response:
        service.revoke_token(c)
        return Response(status_code=204)

    @app.post("/v1/masknets", response_model=MaskNetOut, status_code=201, tags=["masknets"], responses=_ERRORS)
    async def request_masknet(request: Request, cred: Bearer, body: MaskNetRequest | None = None) -> Response:
        """Issue a new MaskNet for this account (subject to the account and client limits)."""
        # async, and authenticated by the batcher with the rest of its micro-batch: the request
        # costs no pool thread and no database round trip of its own
        if not cred or not cred.credentials:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        body = body or MaskNetRequest()
        variant = service.variant(body.format, body.precision, body.shape)
        row = await service.issue_with_token(cred.credentials, _client(request), variant)
        # the model serialised once by pydantic-core: returned as a model, FastAPI would dump it,
        # validate it again and encode it with json.dumps (the same JSON, more CPU per request)
        return Response(_net_out(row).model_dump_json(), status_code=201, media_type="application/json")

    @app.get("/v1/masknets", response_model=MaskNetList, tags=["masknets"], responses=_ERRORS)
    def list_masknets(c: Auth, include_retired: bool = False) -> MaskNetList:
        return MaskNetList(masknets=[_net_out(r) for r in service.list_nets(c, include_retired)])

    @app.get("/v1/masknets/{model_id}", response_model=MaskNetOut, tags=["masknets"], responses=_ERRORS)
    def get_masknet(c: Auth, model_id: str) -> MaskNetOut:
        return _net_out(service.get_net(c, model_id))

    @app.get("/v1/masknets/{model_id}/file", tags=["masknets"], responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The model file."}, **_ERRORS})
    def download(c: Auth, model_id: str) -> Response:
        row, data = service.file(c, model_id)
        variant = Variant(row.format, row.precision, row.shape)
        return Response(data, media_type=variant.media_type, headers={
            "Content-Disposition": f'attachment; filename="{variant.file_name(row.model_id)}"', "X-Content-SHA256": row.file_sha256})

    @app.post("/v1/masknets/{model_id}/rotate", response_model=MaskNetOut, status_code=201, tags=["masknets"],
              responses=_ERRORS)
    def rotate(c: Auth, model_id: str, body: MaskNetRequest | None = None) -> MaskNetOut:
        """Issue a new net and retire this one (atomically); the request may change format/precision/shape."""
        old = service.get_net(c, model_id)
        body = body or MaskNetRequest()
        variant = service.variant(body.format or old.format, body.precision or old.precision, body.shape or old.shape)
        return _net_out(service.request_net(c, variant, retire=model_id))

    @app.post("/v1/masknets/{model_id}/retire", response_model=MaskNetOut, tags=["masknets"], responses=_ERRORS)
    def retire(c: Auth, model_id: str) -> MaskNetOut:
        """Retire a net: it stays listed (include_retired=true) but can no longer be downloaded."""
        return _net_out(service.retire(c, model_id))

    return app


__all__ = ["build_service", "create_app"]
