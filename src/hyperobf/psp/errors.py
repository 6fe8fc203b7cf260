"""Errors the service shows to clients: an HTTP status, a stable machine-readable code and a
one-line message. The API turns each into a JSON body ``{"error": code, "detail": message}``."""

from __future__ import annotations


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Gone(ApiError):
    status, code = 410, "gone"


class LimitExceeded(ApiError):
    status, code = 429, "limit_exceeded"

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))} if retry_after is not None else {}
        super().__init__(detail, headers=headers)
        self.retry_after = retry_after


class Unavailable(ApiError):
    status, code = 503, "unavailable"
