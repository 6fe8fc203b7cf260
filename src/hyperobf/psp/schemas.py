"""Request and response bodies of the PSP API (pydantic; they make the OpenAPI spec)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    error: str = Field(description="Stable machine-readable code, e.g. limit_exceeded.")
    detail: str = Field(description="One-line human-readable reason.")


class AccountCreate(Strict):
    evidence: dict[str, str] = Field(default_factory=dict, description=(
        "What the configured verifier checks, e.g. {\"invite_code\": \"...\"}. Ignored by the open verifier."))

    @field_validator("evidence")
    @classmethod
    def _bounded(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 16 or any(len(k) > 64 or len(x) > 2048 for k, x in v.items()):
            raise ValueError("evidence: at most 16 entries, keys <= 64 and values <= 2048 characters")
        return v


class TokenOut(BaseModel):
    token: str = Field(description="Bearer token. Shown once: only its hash is stored.")
    expires_at: dt.datetime


class AccountCreated(TokenOut):
    account_id: str


class AccountOut(BaseModel):
    account_id: str
    subject: str
    created_at: dt.datetime
    active_masknets: int
    issued_masknets: int


class MaskNetRequest(Strict):
    format: str | None = Field(None, description="Model format (see GET /v1/info); default from the service config.")
    precision: str | None = Field(None, description="Weight precision, e.g. fp32 (see GET /v1/info).")
    shape: str | None = Field(None, description="fixed (1x3x112x112, for mobile) or dynamic (N x 3 x H x W).")


class MaskNetOut(BaseModel):
    model_id: str
    format: str
    precision: str
    shape: str
    structure: str
    spec_digest: str
    method: str
    hypernet_sha256: str = Field(description="sha256 of the HyperNet checkpoint that generated this net.")
    sha256: str = Field(description="sha256 of the model file.")
    size: int
    issued_at: dt.datetime
    retired_at: dt.datetime | None
    replaced_by: str | None
    download: str | None = Field(description="Path of the model file, or null when it can no longer be downloaded.")


class MaskNetList(BaseModel):
    masknets: list[MaskNetOut]


class FormatOffer(BaseModel):
    format: str
    precisions: list[str]
    shapes: list[str]


class ServiceInfo(BaseModel):
    structure: str
    method: str
    hypernet_sha256: str
    formats: list[FormatOffer]
    verifier: str
    limits: dict[str, float]
    min_distance: float = Field(description="Minimum functional distance of a new net to every issued one.")
    protection: str = Field("", description="What was measured of this HyperNet's protection (one line).")
    protection_record: dict | None = Field(None, description="The protection record copied into every issued net.")
