"""PSP service configuration: a frozen dataclass, from TOML (``[serve]`` table) plus overrides."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..toml_config import check_keys, read_table

DAY = 86400.0
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


@dataclass(frozen=True)
class PSPConfig:
    # what is served
    checkpoint: str = ""  # trained HyperNet checkpoint.pt
    device: str = "auto"  # auto | cpu | cuda: where the HyperNet and probe evaluation run
    db_url: str = "sqlite:///psp.db"  # SQLAlchemy URL: sqlite:///file.db or postgresql+psycopg://...
    # secrets at rest
    key_file: str = ""  # Fernet key file (created 0600 if absent); env HYPEROBF_PSP_KEY wins
    z_storage: str = "encrypted"  # encrypted | none: keep each user's latent z (Fernet) or drop it
    download_once: bool = False  # drop the (Fernet-encrypted) model file after its first download
    # accounts and tokens
    verifier: str = "open"  # open | invite | "package.module:factory" (a Verifier)
    invite_codes_file: str = ""  # one code per line, for verifier = "invite"
    token_ttl_days: float = 90.0
    # issuance limits (the strongest attacker registers many devices to collect MaskNets, §5.4)
    max_active_per_account: int = 2  # un-retired nets one account may hold
    max_issued_per_account: int = 5  # nets (rotations included) per account per window
    account_window_s: float = DAY
    max_issued_per_client: int = 20  # nets per client address per window
    max_accounts_per_client: int = 5  # accounts created per client address per window
    client_window_s: float = DAY
    # near-duplicate check: RMS over the probe batch of (δ_new − δ_old) / ρ_pixel
    min_distance: float = 0.02  # a fresh tiny HyperNet: nearest of 5 000 nets is ~0.02–0.11
    max_draws: int = 8  # latents drawn per request before giving up (503)
    probe_images: int = 4
    # 16x16 probes: pairwise distances correlate 0.998 with 32x32 probes (structure A) at 1/4 of the
    # cost, which dominates issuance on CPU (grouped conv over the probe batch)
    probe_size: int = 16
    fingerprint_dim: int = 512  # Johnson–Lindenstrauss projection of the flattened probe δ
    # micro-batching of generation
    max_batch: int = 64
    # how long a batch's first request waits for others, only while requests arrive more often
    # than that (psp/batcher.py): a batch costs ~10 ms of CPU however small, a net ~2 ms more
    max_wait_ms: float = 25.0
    request_timeout_s: float = 60.0
    # defaults for requests
    default_format: str = "onnx"
    default_precision: str = "fp32"
    default_shape: str = "fixed"
    # browser clients (web/): origins allowed to call the API from a page (CORS), e.g. "https://app.example";
    # none by default. Exact origins only (scheme://host[:port]): no "*", since requests carry bearer tokens.
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.z_storage not in ("encrypted", "none"):
            raise ValueError(f"z_storage must be 'encrypted' or 'none', got {self.z_storage!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for name in ("max_active_per_account", "max_issued_per_account", "max_issued_per_client",
                     "max_accounts_per_client", "max_draws", "probe_images", "probe_size", "fingerprint_dim",
                     "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("account_window_s", "client_window_s", "token_ttl_days", "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.min_distance < 0 or self.max_wait_ms < 0:
            raise ValueError("min_distance and max_wait_ms must be >= 0")
        if self.verifier == "invite" and not self.invite_codes_file:
            raise ValueError("verifier 'invite' needs invite_codes_file")
        if isinstance(self.cors_origins, str):
            raise ValueError("cors_origins must be a list of origins")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))  # TOML gives a list
        for origin in self.cors_origins:
            if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
                raise ValueError(f"cors_origins: {origin!r} is not an origin like https://app.example[:port]")

    @classmethod
    def from_dict(cls, data: dict) -> "PSPConfig":
        check_keys(cls, data, "serve config")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> "PSPConfig":
        return cls.from_dict(read_table(path, "serve", overrides))

    def with_(self, **changes) -> "PSPConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)
