"""Secrets at rest: bearer tokens (random, stored as sha256), the Fernet box for z and model
files, and keyed hashes of client addresses (limits need equality, not the address)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TOKEN_PREFIX = "hob_"
KEY_ENV = "HYPEROBF_PSP_KEY"  # comma-separated Fernet keys; wins over the key file (several servers: set it on all)
MAGIC = b"hog1"  # AES-GCM blob marker (a Fernet token starts with "gAAAAA")


def new_token() -> str:
    """A bearer token: 256 bits from the OS CSPRNG. Shown to its owner once, stored hashed."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_public_id() -> str:
    return secrets.token_hex(12)


class SecretBox:
    """Encryption of z and model files at rest. Several keys (comma-separated in the env var)
    allow key rotation: the first encrypts, all decrypt.

    New blobs are AES-256-GCM (``MAGIC`` + 12-byte nonce + ciphertext and tag), with a key
    derived from each configured Fernet key: one pass of hardware AES over a model file, where
    Fernet (AES-CBC + HMAC + base64) cost ~0.4 ms per 60 KB file, a fifth of an issuance's CPU.
    Blobs written as Fernet tokens by earlier versions still decrypt."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("no encryption key")
        try:
            self._f = MultiFernet([Fernet(k) for k in keys])
        except ValueError:
            raise ValueError("encryption key is not a valid Fernet key (32 url-safe base64 bytes)") from None
        self._gcm = [AESGCM(hashlib.sha256(b"hyperobf-psp-aesgcm|" + k).digest()) for k in keys]
        # keyed hash of client addresses; derived so one secret configures the service
        self._mac_key = hashlib.sha256(b"hyperobf-psp-client|" + keys[0]).digest()

    def encrypt(self, data: bytes) -> bytes:
        nonce = os.urandom(12)  # random 96-bit nonces: safe far beyond 2^32 blobs per key
        return MAGIC + nonce + self._gcm[0].encrypt(nonce, data, MAGIC)

    def decrypt(self, token: bytes) -> bytes:
        token = bytes(token)
        if token.startswith(MAGIC):
            nonce, body = token[len(MAGIC):len(MAGIC) + 12], token[len(MAGIC) + 12:]
            for gcm in self._gcm:
                try:
                    return gcm.decrypt(nonce, body, MAGIC)
                except InvalidTag:
                    continue
            raise ValueError("stored secret cannot be decrypted with the configured key")
        try:
            return self._f.decrypt(token)
        except InvalidToken:
            raise ValueError("stored secret cannot be decrypted with the configured key") from None

    def client_hash(self, address: str) -> str:
        return hmac.new(self._mac_key, address.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def load(cls, key_file: str | Path | None, create: bool = True) -> "SecretBox":
        """Keys from $HYPEROBF_PSP_KEY, else from ``key_file`` (created with mode 0600 if absent).

        Several workers may start at once on a fresh deployment: the key is written to a
        private temporary file and then hard-linked to ``key_file``, which fails if the name
        exists, so exactly one key wins and nobody ever reads a half-written file."""
        env = os.environ.get(KEY_ENV, "").strip()
        if env:
            return cls([k.strip().encode() for k in env.split(",") if k.strip()])
        if not key_file:
            raise ValueError(f"no encryption key: set {KEY_ENV} or a key file (--key-file)")
        path = Path(key_file)
        if not path.exists():
            if not create:
                raise FileNotFoundError(f"key file not found: {path}")
            _create_key_file(path)
        lines = [l.strip() for l in path.read_bytes().splitlines() if l.strip()]
        if not lines:
            raise ValueError(f"key file is empty: {path}")
        return cls(lines)


def _create_key_file(path: Path) -> None:
    """Publish a new key at ``path`` atomically unless another process already did."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and never replaces an existing key
        except FileExistsError:
            pass  # another worker won: use its key
    finally:
        tmp.unlink(missing_ok=True)
