"""Identity verification at account creation (pluggable).

The thesis's PSP sends a MaskNet "after verification" without saying how; deployments
differ (phone/SMS, e-mail, an app-store attestation, an invite). A :class:`Verifier` gets
the evidence the client sent and returns an :class:`Identity` or raises
:class:`VerificationError`. An identity marked ``unique`` may own one account only, which
is what stops one person from registering many "devices" (§5.4) once verification is real.

Built in: ``open`` (accepts everyone; development and load tests) and ``invite`` (one
account per invite code from a file). Anything else: ``"package.module:factory"``, where
``factory(config)`` returns a Verifier.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from .config import PSPConfig


@dataclass(frozen=True)
class Identity:
    subject: str  # stored with the account; must not itself be a secret
    unique: bool = False  # at most one account per subject


class VerificationError(Exception):
    """The evidence does not verify; the message is shown to the client."""


@runtime_checkable
class Verifier(Protocol):
    def verify(self, evidence: dict[str, str], client: str) -> Identity: ...


class OpenVerifier:
    """Accepts everyone (subject "open"); per-client account limits still apply."""

    def verify(self, evidence: dict[str, str], client: str) -> Identity:
        return Identity("open")


class InviteCodeVerifier:
    """Evidence ``{"invite_code": ...}`` must be one of the codes in a file (one per line);
    each code opens one account. Only code hashes are kept in memory and in the database."""

    def __init__(self, codes_file: str | Path) -> None:
        path = Path(codes_file)
        if not path.is_file():
            raise FileNotFoundError(f"invite codes file not found: {path}")
        codes = [l.strip() for l in path.read_text().splitlines() if l.strip() and not l.startswith("#")]
        if not codes:
            raise ValueError(f"invite codes file has no codes: {path}")
        self._hashes = [self._hash(c) for c in codes]

    @staticmethod
    def _hash(code: str) -> str:
        return hashlib.sha256(b"hyperobf-invite|" + code.encode()).hexdigest()

    def verify(self, evidence: dict[str, str], client: str) -> Identity:
        code = evidence.get("invite_code", "")
        if not code:
            raise VerificationError("an invite code is required (evidence.invite_code)")
        h = self._hash(code)
        # compare against every code so timing does not reveal how many matched a prefix
        ok = False
        for known in self._hashes:
            ok |= hmac.compare_digest(h, known)
        if not ok:
            raise VerificationError("invite code not recognised")
        return Identity(f"invite:{h[:32]}", unique=True)


def describe_verifier(verifier: Verifier, config: PSPConfig) -> str:
    """One line for the start-up log: which verifier decides who gets an account."""
    if isinstance(verifier, OpenVerifier):
        return "open: anyone may create an account (development and load tests; per-client limits still apply)"
    if isinstance(verifier, InviteCodeVerifier):
        return f"invite: one account per code in {config.invite_codes_file}"
    kind = type(verifier)
    return f"custom: {config.verifier if ':' in config.verifier else kind.__module__ + '.' + kind.__qualname__}"


def build_verifier(config: PSPConfig) -> Verifier:
    if config.verifier == "open":
        return OpenVerifier()
    if config.verifier == "invite":
        return InviteCodeVerifier(config.invite_codes_file)
    module, _, attr = config.verifier.partition(":")
    if not module or not attr:
        raise ValueError(f"verifier must be open, invite or 'package.module:factory', got {config.verifier!r}")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load verifier {config.verifier!r}: {e}") from None
    verifier = factory(config)
    if not isinstance(verifier, Verifier):
        raise ValueError(f"verifier {config.verifier!r} has no verify(evidence, client) method")
    return verifier
